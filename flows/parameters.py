"""Flow parameter types shared by several flows, with the example the Prefect form shows.

A parameter's description comes from its flow's docstring (the `Args:` section, which Prefect
reads); Prefect drops a description given in `Annotated` metadata but keeps its examples. Write
placeholders in descriptions as `{name}`: the UI renders descriptions as HTML, where `<name>`
vanishes."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

InputUri = Annotated[str, Field(examples=["s3://crawl/2026-11/"])]
StoreUri = Annotated[str, Field(examples=["s3://mixforge"])]
RunId = Annotated[str | None, Field(examples=["crawl-2026-11"])]
Incremental = Annotated[bool, Field(examples=[True])]
