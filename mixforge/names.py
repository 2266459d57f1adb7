"""The one rule for every name that becomes a path or a Prefect artifact key.

Run ids, mixture, model, group and phase names, and artifact keys all go through
`validate_name`: 1-64 lowercase letters, digits and single dashes, starting and ending with a
letter or digit. That excludes `/`, `..`, absolute paths, upper case (artifact keys are lower
case) and anything a shell or an object store would treat specially, so a name can never
point outside the folder it is joined to.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

from mixforge.config_errors import ConfigError

NAME_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
MAX_NAME_CHARS = 64


class InvalidName(ConfigError):
    """A name that would become a path or an artifact key breaks the naming rule."""


def is_valid_name(value: object) -> bool:
    return isinstance(value, str) and bool(NAME_PATTERN.match(value)) and "--" not in value


def validate_name(value: object, what: str = "name") -> str:
    """`value` if it follows the rule; else InvalidName saying what was wrong and what to use."""
    if is_valid_name(value):
        return value  # type: ignore[return-value]
    if not isinstance(value, str):
        problem = f"must be a string, not {type(value).__name__}"
    elif not value:
        problem = "is empty"
    elif len(value) > MAX_NAME_CHARS:
        problem = f"is {len(value)} characters long (at most {MAX_NAME_CHARS})"
    elif "/" in value or "\\" in value or ".." in value:
        problem = "contains a path separator or '..'"
    elif value != value.lower():
        problem = "contains upper-case letters"
    else:
        problem = "contains characters other than lowercase letters, digits and single dashes"
    raise InvalidName(
        f"invalid {what} {value!r}: it {problem}; use 1-{MAX_NAME_CHARS} lowercase letters, digits and single "
        "dashes, starting and ending with a letter or digit (e.g. 'nightly-2026-12', 'edu-quality')"
    )


def name_field(what: str):
    """A pydantic field type applying the rule (the error names `what`)."""
    return Annotated[str, AfterValidator(lambda v: validate_name(v, what))]


_ARTIFACT_KEY = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")


def artifact_key(*parts: str) -> str:
    """A Prefect artifact key from name parts joined by dashes (each part a valid name; the key
    may be longer than one name)."""
    key = "-".join(parts)
    if not _ARTIFACT_KEY.match(key) or "--" in key:
        raise InvalidName(f"invalid artifact key {key!r}: lowercase letters, digits and single dashes only")
    return key


# Versions of immutable things (models, mixtures): v0001, v0002, ... (four digits at least, so they sort).
VERSION_RE = re.compile(r"^v(\d{4,})$")


def version_label(n: int) -> str:
    return f"v{n:04d}"


def parse_version(label: str) -> int:
    m = VERSION_RE.match(label)
    if not m:
        raise ValueError(f"not a version: {label!r} (expected v0001, v0002, ...)")
    return int(m.group(1))
