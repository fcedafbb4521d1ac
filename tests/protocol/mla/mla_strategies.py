"""Hypothesis strategies that build valid MLA message documents as JSON values.

Each strategy yields the JSON object an agency system would send, with its
payload digest sealed, in the exact form the models serialise back (UTC
`created_at` with milliseconds, whole-hour offsets for payload times), so a
round trip can be compared key for key.
"""

import datetime as dt
import uuid
from typing import Any

from hypothesis import strategies as st

from protocol.encoding import canonical_json, format_timestamp, sha256_hex

JsonObject = dict[str, Any]

ARABIC = st.characters(min_codepoint=0x0600, max_codepoint=0x06FF)
BENGALI = st.characters(min_codepoint=0x0980, max_codepoint=0x09FF)
ANY_TEXT_CHARACTER = st.characters(codec="utf-8", exclude_categories=["Cs"], exclude_characters="\x00")
JOINERS_AND_ISOLATES = st.sampled_from(["\u200c", "\u200d", "\u2066", "\u2067", "\u2068", "\u2069", " ", "\n"])

texts = st.one_of(
    st.text(ANY_TEXT_CHARACTER, min_size=1, max_size=30),
    st.text(st.one_of(ARABIC, JOINERS_AND_ISOLATES), min_size=1, max_size=30),
    st.text(st.one_of(BENGALI, JOINERS_AND_ISOLATES), min_size=1, max_size=30),
)
"""Free text: anything UTF-8 can carry but NUL and lone surrogates, Arabic and Bengali often."""

language_tags = st.sampled_from(["en", "ar", "bn", "ar-LY", "bn-BD", "en-GB"])
local_ids = st.from_regex(r"[A-Z][A-Z0-9]{0,4}", fullmatch=True)
dates = st.dates(min_value=dt.date(2020, 1, 1), max_value=dt.date(2030, 12, 31))
PARTIES = (("BD", "BD-MOHA-PSD"), ("LY", "LY-MLA-CA"))
EARLIEST = dt.datetime(2020, 1, 1)  # noqa: DTZ001 - Hypothesis takes naive bounds; the zone is set on each draw
LATEST = dt.datetime(2030, 12, 31)  # noqa: DTZ001 - idem


@st.composite
def localized_texts(draw: st.DrawFn) -> JsonObject:
    """A `LocalizedText`: an original and translations into other languages."""
    lang = draw(language_tags)
    others = draw(st.lists(language_tags.filter(lambda tag: tag != lang), unique=True, max_size=2))
    text: JsonObject = {"lang": lang, "value": draw(texts)}
    if others:
        text["translations"] = {tag: draw(texts) for tag in others}
    return text


@st.composite
def utc_instants(draw: st.DrawFn) -> str:
    """An envelope time as `UtcTimestamp` writes it."""
    moment = draw(st.datetimes(min_value=EARLIEST, max_value=LATEST))
    return format_timestamp(moment.replace(microsecond=moment.microsecond // 1000 * 1000, tzinfo=dt.UTC))


@st.composite
def local_times(draw: st.DrawFn) -> str:
    """A business time with the author's whole-hour, non-zero offset, as pydantic writes it."""
    moment = draw(st.datetimes(min_value=EARLIEST, max_value=LATEST))
    hours = draw(st.sampled_from([-5, -1, 1, 2, 3, 6, 9]))
    zone = dt.timezone(dt.timedelta(hours=hours))
    return moment.replace(microsecond=0, tzinfo=zone).isoformat()


def authority(state: str, agency: str, name: JsonObject, *, functions: JsonObject | None = None) -> JsonObject:
    value: JsonObject = {"authority_id": agency, "name": name, "type": "central_authority", "country": state}
    if functions is not None:
        value["functions"] = functions
    return value


@st.composite
def persons(draw: st.DrawFn, person_id: str) -> JsonObject:
    """A natural person who is not a protected victim (victims have their own rule, R8)."""
    return {
        "person_id": person_id,
        "kind": "natural",
        "roles": draw(st.lists(st.sampled_from(["suspect", "witness", "holder_of_records"]), min_size=1, unique=True)),
        "names": [{"full": draw(texts), "lang": draw(language_tags)}],
        "nationalities": draw(st.lists(st.sampled_from(["BD", "LY", "AE"]), unique=True, max_size=2)),
    }


@st.composite
def assistance_items(draw: st.DrawFn, item_id: str, person_ids: list[str]) -> JsonObject:
    """One assistance item of a type drawn among those with and without required details."""
    item: JsonObject = {"item_id": item_id, "description": draw(localized_texts())}
    kinds = ["locate_identify_persons", "production_of_records", "search_and_seizure", "criminal_record_extract"]
    if person_ids:
        kinds += ["taking_evidence", "service_of_documents"]
    kind = draw(st.sampled_from(kinds))
    item["type"] = kind
    if kind == "production_of_records":
        item["details"] = {"record_types": ["bank"], "holder": [draw(texts)]}
    elif kind == "search_and_seizure":
        item["location"] = {"country": "LY", "text": draw(localized_texts())}
        item["basis_for_belief"] = draw(localized_texts())
        item["details"] = {"items_sought": draw(st.lists(texts, min_size=1, max_size=3))}
    elif kind == "taking_evidence":
        item["person_refs"] = [draw(st.sampled_from(person_ids))]
        item["details"] = {"capacity": "witness", "compulsion": "voluntary"}
    elif kind == "service_of_documents":
        item["person_refs"] = [draw(st.sampled_from(person_ids))]
        item["details"] = {"documents": ["ATT-1"], "service_method": "simple_transmission"}
    if draw(st.booleans()):
        item["coercive"] = draw(st.booleans())
    return item


@st.composite
def mla_requests(draw: st.DrawFn, requesting: tuple[str, str], requested: tuple[str, str]) -> JsonObject:
    """A valid `MlaRequest` payload from `requesting` to `requested` (State, agency)."""
    ids = draw(st.lists(local_ids, min_size=2, max_size=6, unique=True))
    person_ids = ids[: draw(st.integers(0, len(ids) - 1))]
    item_ids = [f"I{index}" for index in range(draw(st.integers(1, 3)))]
    signed = draw(dates)
    payload: JsonObject = {
        "requesting_state": requesting[0],
        "requested_state": requested[0],
        "requesting_authority": authority(*requesting, draw(localized_texts())),
        "conducting_authority": authority(*requesting, draw(localized_texts()), functions=draw(localized_texts())),
        "legal_basis": [{"instrument": "UNTOC", "role": "primary"}],
        "proceeding": {"type": "investigation", "subject_matter": draw(localized_texts())},
        "offences": [
            {
                "offence_id": "O1",
                "title": draw(localized_texts()),
                "jurisdiction": requesting[0],
                "statute": draw(texts),
                "provision": draw(texts),
                "penalties": [{"kind": "imprisonment", "bound": "max", "years": draw(st.integers(0, 30))}],
            }
        ],
        "persons": [draw(persons(person_id)) for person_id in person_ids],
        "assistance_requested": [draw(assistance_items(item_id, person_ids)) for item_id in item_ids],
        "facts_summary": {"text": draw(localized_texts())},
        "purpose": {"text": draw(localized_texts())},
        "urgency": {"level": draw(st.sampled_from(["routine", "urgent"]))},
        "confidentiality": {"keep_fact_and_substance_confidential": draw(st.booleans())},
        "language": {"request_language": draw(language_tags)},
        "contacts": [{"role": "case_officer", "name": draw(texts)}],
        "signature": {"signed_by": draw(texts), "title": draw(texts), "date": signed.isoformat()},
    }
    if draw(st.booleans()):
        deadline = signed + dt.timedelta(days=draw(st.integers(0, 365)))
        payload["urgency"]["requested_deadline"] = deadline.isoformat()
        payload["urgency"]["deadline_reason"] = draw(localized_texts())
    return payload


@st.composite
def acknowledgements(draw: st.DrawFn, requested: tuple[str, str]) -> JsonObject:
    """A valid `Acknowledgement` payload from the requested side."""
    payload: JsonObject = {
        "received_at": draw(local_times()),
        "requested_ref": draw(texts),
        "received_by": authority(*requested, draw(localized_texts())),
    }
    if draw(st.booleans()):
        payload["formal_check"] = draw(st.sampled_from(["complete", "not_yet_assessed"]))
    if draw(st.booleans()):
        payload["note"] = draw(localized_texts())
    return payload


@st.composite
def refusals(draw: st.DrawFn) -> JsonObject:
    """A valid `Refusal` payload: grounds with reasons, and a consultation or a waiver."""
    payload: JsonObject = {
        "scope": "items",
        "item_refs": draw(st.lists(local_ids, min_size=1, max_size=3, unique=True)),
        "grounds": [
            {
                "code": draw(st.sampled_from(["ESSENTIAL_INTERESTS", "NO_DUAL_CRIMINALITY", "NON_CONFORMING_REQUEST"])),
                "reasons": draw(localized_texts()),
            }
        ],
    }
    if draw(st.booleans()):
        payload["consultation_ref"] = str(uuid.UUID(int=draw(st.integers(0, 2**128 - 1))))
    else:
        payload["consultation_waived_reason"] = draw(localized_texts())
    return payload


@st.composite
def notes(draw: st.DrawFn) -> JsonObject:
    """A valid note-shaped payload (text, items, attachments)."""
    payload: JsonObject = {"text": draw(localized_texts())}
    if draw(st.booleans()):
        payload["item_refs"] = draw(st.lists(local_ids, max_size=3, unique=True))
    return payload


@st.composite
def documents(draw: st.DrawFn) -> JsonObject:
    """A whole valid document of one of several types, its payload digest sealed."""
    first, second = draw(st.permutations(PARTIES))
    message_type = draw(st.sampled_from(["MLA_REQUEST", "ACKNOWLEDGEMENT", "REFUSAL", "CORRESPONDENCE", "NOTE"]))
    sender, recipient = (second, first) if message_type in {"ACKNOWLEDGEMENT", "REFUSAL"} else (first, second)
    if message_type == "MLA_REQUEST":
        payload = draw(mla_requests(sender, recipient))
    elif message_type == "ACKNOWLEDGEMENT":
        payload = draw(acknowledgements(sender))
    elif message_type == "REFUSAL":
        payload = draw(refusals())
    else:
        payload = draw(notes())
    document: JsonObject = {
        "schema": "mla-exchange/1.0",
        "message_id": str(uuid.UUID(int=draw(st.integers(0, 2**128 - 1)))),
        "message_type": message_type,
        "case_id": draw(st.from_regex(r"[A-Z]{2}-[A-Z]{2}-20[0-9]{2}-[0-9]{4}", fullmatch=True)),
        "sequence": draw(st.integers(1, 10_000)),
        "created_at": draw(utc_instants()),
        "sender": {"state": sender[0], "authority_id": sender[1]},
        "recipient": {"state": recipient[0], "authority_id": recipient[1]},
        "channel": draw(st.sampled_from(["central_authority_direct", "diplomatic"])),
        "classification": draw(st.sampled_from(["RESTRICTED", "CONFIDENTIAL"])),
        "payload": payload,
    }
    if draw(st.booleans()):
        document["test_data"] = True
    document["integrity"] = {"payload_sha256": sha256_hex(canonical_json(payload))}
    return document
