"""What a report shows: a case's messages and the signed steps of each, as the agency holding them reads them.

The shape follows the evidence bundle's account (`protocol.evidence_account`
on the bundle side): one `ReportMessage` per message (who sent it to whom,
its type, the title lines of its document in its languages) with one
`ReportEvent` per signed step (who took it, when, under which key, the
checkpoint that proves it and the witnesses that cosigned that checkpoint).

`document_lines` picks the lines to show from an MLA document: the parties'
names and the first summary texts, in every language the document has them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

MAX_LINE_CHARS: Final = 160
"""A shown line is cut here (with `…`): the report is an account, the document itself is in the bundle."""
MAX_TEXTS: Final = 3
"""Localized texts of a payload shown per message (the summary first): a report is an account, not the document."""
MAX_DEPTH: Final = 32
SUMMARY_KEYS: Final = ("summary", "facts_summary", "text", "note", "grounds", "comment")
"""Payload fields whose localized text best says what a message is about, in this order."""


@dataclass(frozen=True, slots=True)
class ReportEvent:
    """One signed step in a message's life."""

    actor: str
    """The agency or the gateway that took the step (and signed it)."""
    at: datetime
    evidence_type: str
    """`SENT` for the sender's own signature, else the evidence type (`DELIVERY`, `RETRIEVAL`, ...)."""
    signer_key: str
    recipient: str | None = None
    checkpoint_size: int | None = None
    """The size of the checkpoint whose inclusion proof covers the step (None for `SENT`)."""
    witnesses: tuple[str, ...] = ()
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class ReportMessage:
    """One message of the case, with its lines in clear and its steps."""

    message_id: str
    sender: str
    recipients: tuple[str, ...]
    message_type: str
    sequence: int | None
    created_at: datetime | None
    lines: tuple[str, ...]
    """Title and summary lines, each in one language (English, Arabic, Bengali): drawn per script."""
    events: tuple[ReportEvent, ...]


@dataclass(frozen=True, slots=True)
class CaseReport:
    """Everything one report shows."""

    case_id: str
    agency: str
    """The agency that draws the report (it holds the messages in clear)."""
    drawn_at: datetime
    log_origin: str
    languages: tuple[str, ...]
    title_lines: tuple[str, ...]
    """The case's title in its languages (the first message's subject, for instance)."""
    messages: tuple[ReportMessage, ...]


def _clip(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= MAX_LINE_CHARS else flat[: MAX_LINE_CHARS - 1] + "…"


def localized(value: object) -> Iterator[tuple[str, str]]:
    """(language, text) of a localized text object (`{"lang", "value", "translations"}`), original first."""
    if not isinstance(value, Mapping):
        return
    lang, text = value.get("lang"), value.get("value")
    if isinstance(lang, str) and isinstance(text, str):
        yield lang, text
        translations = value.get("translations")
        if isinstance(translations, Mapping):
            for other, translated in translations.items():
                if isinstance(other, str) and isinstance(translated, str):
                    yield other, translated


def _ordered(pairs: Iterator[tuple[str, str]], languages: Sequence[str]) -> list[str]:
    found = dict(pairs)
    return [_clip(found[lang]) for lang in languages if lang in found]


def _summary(payload: Mapping[str, Any]) -> object:
    for key in SUMMARY_KEYS:
        value = payload.get(key)
        if isinstance(value, Mapping) and "text" in value and "lang" not in value:
            value = value["text"]  # {"text": {"lang": ..., "value": ...}}
        if isinstance(value, Mapping) and "lang" in value:
            return value
    return None


def _texts(value: object, depth: int = 0) -> Iterator[Mapping[str, Any]]:
    """Every localized text object in a payload, depth first, in document order."""
    if depth > MAX_DEPTH:
        return
    if isinstance(value, Mapping):
        if isinstance(value.get("lang"), str) and isinstance(value.get("value"), str):
            yield value
            return
        for item in value.values():
            yield from _texts(item, depth + 1)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _texts(item, depth + 1)


def document_lines(
    document: Mapping[str, Any], languages: Sequence[str] = ("en", "ar", "bn"), *, texts: int = MAX_TEXTS
) -> tuple[str, ...]:
    """The lines to show for an MLA document, each in every one of `languages` it has.

    The sender's and recipient's names, then the payload's summary (the first
    of `SUMMARY_KEYS` it has), then its other localized texts in document
    order, `texts` of them at most.
    """
    lines: list[str] = []
    for party in ("sender", "recipient"):
        entry = document.get(party)
        if isinstance(entry, Mapping):
            lines += _ordered(localized(entry.get("name")), languages)
    payload = document.get("payload")
    if isinstance(payload, Mapping):
        summary = _summary(payload)
        chosen = [summary] if summary is not None else []
        chosen += [text for text in _texts(payload) if text is not summary]
        for text in chosen[:texts]:
            lines += _ordered(localized(text), languages)
    return tuple(dict.fromkeys(lines))


__all__ = ["CaseReport", "ReportEvent", "ReportMessage", "document_lines", "localized"]
