"""Settings of the `pii` stage (`extra_stages.pii` in the curate config)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mixforge.strict import StrictModel

EntityMode = Literal["off", "annotate", "redact", "drop"]
_MODE_HELP = (
    "`annotate`: count it and record its spans (`pii_<entity>`, `pii_spans`); `redact`: replace it by its "
    "placeholder ({placeholder}) and count it; `drop`: drop the document (drop_reason `pii.{entity}`); `off`."
)


def _mode(entity: str, placeholder: str) -> EntityMode:
    return Field("redact", description=f"{entity}: " + _MODE_HELP.format(placeholder=placeholder, entity=entity))


class PresidioConfig(StrictModel):
    """The optional NER backend (names, places) through Presidio: `pip install presidio-analyzer` and a spaCy
    pipeline with an NER component (e.g. `en_core_web_lg`), neither in mixforge's lock."""

    spacy_model: str = Field(
        "en_core_web_lg", description="spaCy pipeline Presidio runs (a package name or a local directory)."
    )
    language: str = Field("en", description="Language code the pipeline is for.")
    entities: tuple[str, ...] = Field(("PERSON", "LOCATION"), description="Presidio entity types to act on.")
    mode: Literal["annotate", "redact", "drop"] = Field(
        "redact", description="As the regex entities; placeholders are `<PERSON>`, `<LOCATION>`, ..."
    )
    score_threshold: float = Field(0.5, ge=0, le=1, description="Minimum Presidio score.")


class PIIConfig(StrictModel):
    """Which PII the stage looks for and what it does with each kind (e-mail, IP, phone, card, IBAN)."""

    email: EntityMode = _mode("email", "<EMAIL>")
    ip_address: EntityMode = _mode("ip_address", "<IP_ADDRESS>")
    phone: EntityMode = _mode("phone", "<PHONE>")
    credit_card: EntityMode = _mode("credit_card", "<CREDIT_CARD>")
    iban: EntityMode = _mode("iban", "<IBAN>")
    public_ips_only: bool = Field(
        True,
        description="Only public IP addresses are PII: private, loopback, link-local, reserved and "
        "documentation ranges are left as they are.",
    )
    spans: bool = Field(
        True, description="Write `pii_spans` (list of {entity, start, end}: the annotated entities' spans)."
    )
    ner: PresidioConfig | None = Field(None, description="Names and places through Presidio (optional extra).")

    def modes(self) -> dict[str, str]:
        """Entity -> mode, for the entities that are not off."""
        from mixforge.pii.detect import ENTITIES

        return {e: getattr(self, e) for e in ENTITIES if getattr(self, e) != "off"}
