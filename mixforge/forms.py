"""Config types the Prefect UI renders as form fields.

The flow parameter form is built from the JSON schema of the config models, and the UI gives a
raw JSON editor to anything without typed properties: a free mapping (`additionalProperties`),
`Any`, a `oneOf`. `keyed_list` keeps a mapping's Python value (what the code reads) and the
mapping YAML users write, but shows and serialises it as a list of small typed entries, so the
form has an add button and one typed field per key and value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, GetPydanticSchema, PlainSerializer, TypeAdapter, create_model

from mixforge.strict import StrictModel


def keyed_list(
    entry: str,
    doc: str,
    key: tuple[str, type, str],
    value: tuple[str, Any, str],
    example: dict[str, Any],
) -> Any:
    """`dict[K, V]` that also validates from (and serialises and describes itself as) a list of
    `entry` objects `{key: K, value: V}`. `key`/`value`: (field name, type, description);
    `example`: one entry, shown in the form."""
    (key_name, key_type, key_help), (value_name, value_type, value_help) = key, value
    model = create_model(
        entry,
        __base__=StrictModel,
        __doc__=doc,
        **{
            key_name: (key_type, Field(description=key_help, examples=[example[key_name]])),
            value_name: (value_type, Field(description=value_help, examples=[example[value_name]])),
        },
    )
    entries = TypeAdapter(list[model])

    def from_entries(data: Any) -> Any:
        if isinstance(data, Mapping) or not isinstance(data, (list, tuple)):
            return data  # the mapping form (YAML, the CLI) is the dict itself
        parsed = entries.validate_python(list(data))
        keys = [getattr(e, key_name) for e in parsed]
        if len(set(keys)) != len(keys):
            raise ValueError(f"each {key_name} at most once, got {keys}")
        return {getattr(e, key_name): getattr(e, value_name) for e in parsed}

    def to_entries(mapping: Mapping) -> list[dict[str, Any]]:
        return [{key_name: k, value_name: v} for k, v in mapping.items()]

    return Annotated[
        dict[key_type, value_type],
        BeforeValidator(from_entries),
        PlainSerializer(to_entries),
        GetPydanticSchema(get_pydantic_json_schema=lambda _schema, handler: handler(entries.core_schema)),
    ]


def as_any_of(schema: dict[str, Any]) -> None:
    """`json_schema_extra` for a list of a discriminated union: the items as `anyOf` (the UI's
    choice between typed sub-forms) instead of `oneOf`. Validation is the union's own."""
    items = schema.get("items", {})
    if "oneOf" in items:
        items["anyOf"] = items.pop("oneOf")
