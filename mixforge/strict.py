"""The base of every config and spec model: unknown keys are errors (with the field's path) and
a validated config never changes. Its own module, so every package's config can import it
without importing the others (mixforge.config imports them all)."""

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
