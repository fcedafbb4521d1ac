"""The message document: samples accepted as they stand, negatives refused field by field."""

import json
from pathlib import Path
from typing import Any

import pytest

from protocol.encoding import canonical_json, parse_json_strict, sha256_hex
from protocol.errors import ContentInvalid, ErrorCode
from protocol.ids import AgencyId
from protocol.limits import DEFAULT_LIMITS
from protocol.mla import (
    CONTENT_MODELS,
    MessageDocument,
    MessageType,
    MlaRequest,
    Refusal,
    document_warnings,
    validate_document,
)
from protocol.mla.rules import Rule
from tests.protocol.mla.mla_samples import encode, load_sample, read_json, sample_paths


def refused(raw: bytes) -> ContentInvalid:
    with pytest.raises(ContentInvalid) as caught:
        validate_document(raw)
    return caught.value


def locs(error: ContentInvalid) -> set[tuple[str | int, ...]]:
    return {field_error.loc for field_error in error.errors}


@pytest.mark.parametrize("path", sample_paths(), ids=lambda p: p.name)
def test_every_sample_is_accepted_as_it_stands(path: Path) -> None:
    """Each of the 30 samples passes the strict parser and validates unchanged."""
    raw = path.read_bytes()
    parse_json_strict(raw, max_bytes=DEFAULT_LIMITS.max_document_bytes, max_depth=DEFAULT_LIMITS.max_json_depth)
    document = validate_document(raw)
    assert document.message_type.value in path.name
    assert isinstance(document.payload, CONTENT_MODELS[document.message_type])


@pytest.mark.parametrize("path", sample_paths(), ids=lambda p: p.name)
def test_payload_model_gives_back_exactly_what_was_sent(path: Path) -> None:
    """Dumping a sample's payload model yields the payload as sent, so its digest is unchanged."""
    sent = read_json(path)["payload"]
    document = validate_document(path.read_bytes())
    dumped = document.payload.model_dump(mode="json", exclude_unset=True)
    assert dumped == sent
    assert sha256_hex(canonical_json(dumped)) == sha256_hex(canonical_json(sent))


def test_there_are_thirty_samples_in_five_cases() -> None:
    """The sample set is the one NOTES.md describes: 30 messages, 5 cases."""
    documents = [validate_document(path.read_bytes()) for path in sample_paths()]
    assert len(documents) == 30
    assert len({document.case_id for document in documents}) == 5


def test_document_exposes_what_other_code_reads() -> None:
    """A document exposes ids, type, case, parties' agency ids, reply and date, typed."""
    document = validate_document(encode(load_sample("BD-LY-2025-0007_02_ACKNOWLEDGEMENT.json")))
    assert str(document.message_id) == "5e68c8bb-b035-5829-a78e-62203157edca"
    assert document.message_type is MessageType.ACKNOWLEDGEMENT
    assert document.case_id == "BD-LY-2025-0007"
    assert document.sender.authority_id == AgencyId("LY-MLA-CA")
    assert document.recipient.authority_id == AgencyId("BD-MOHA-PSD")
    assert str(document.in_reply_to) == "b5c71fe6-1c43-5d56-bb4e-ad1ce59233df"
    assert document.created_at is not None
    assert document.created_at.isoformat() == "2025-03-06T08:30:00+00:00"


def test_missing_facts_summary_is_refused_at_the_field(negative_dir: Path) -> None:
    """N1: a request without a facts summary is refused at ("payload", "facts_summary")."""
    error = refused((negative_dir / "N1_missing_facts_summary.json").read_bytes())
    assert error.code is ErrorCode.CONTENT_INVALID
    assert ("payload", "facts_summary") in locs(error)


def test_refusal_without_reasons_or_consultation_is_refused_at_both_fields(negative_dir: Path) -> None:
    """N2: the ground without reasons and the missing consultation are both named."""
    error = refused((negative_dir / "N2_refusal_without_reasons_or_consultation.json").read_bytes())
    assert {("payload", "grounds", 0, "reasons"), ("payload", "consultation_ref")} <= locs(error)


def test_refusal_on_bank_secrecy_is_refused(negative_dir: Path) -> None:
    """N3: a bank-secrecy ground is refused at its code (UNTOC 18(8), rule R1)."""
    error = refused((negative_dir / "N3_bank_secrecy_refusal_under_UNTOC.json").read_bytes())
    assert ("payload", "grounds", 0, "code") in locs(error)
    assert any("R1" in e.msg for e in error.errors)


def test_deadline_without_reason_is_refused(negative_dir: Path) -> None:
    """N4: a requested deadline without reasons is refused at deadline_reason (UNTOC 18(24))."""
    error = refused((negative_dir / "N4_deadline_without_reason.json").read_bytes())
    assert ("payload", "urgency", "deadline_reason") in locs(error)


@pytest.mark.parametrize(
    ("name", "rule_loc"),
    [
        ("N2_refusal_without_reasons_or_consultation.json", ("payload", "consultation_ref")),
        ("N3_bank_secrecy_refusal_under_UNTOC.json", ("payload", "grounds", 0, "code")),
        ("N4_deadline_without_reason.json", ("payload", "urgency", "deadline_reason")),
    ],
)
def test_wrong_digest_is_reported_with_the_legal_rule(
    negative_dir: Path, name: str, rule_loc: tuple[str | int, ...]
) -> None:
    """A negative sample's wrong payload digest and its legal violation are listed together."""
    error = refused((negative_dir / name).read_bytes())
    assert {("integrity", "payload_sha256"), rule_loc} <= locs(error)


def test_negative_sequence_documents_are_valid_one_by_one(negative_dir: Path) -> None:
    """N5's documents are each valid; only their order is wrong (see the lifecycle tests)."""
    sequence = read_json(negative_dir / "N5_final_before_ack.json")
    assert isinstance(sequence, list)
    for document in sequence:
        validate_document(encode(document, reseal=False))


def test_altered_payload_is_caught_by_its_digest() -> None:
    """Changing one character of the payload without resealing is a digest mismatch, alone."""
    document = load_sample("BD-LY-2025-0007_09_STATUS_INQUIRY.json")
    document["payload"]["text"]["value"] += "."
    error = refused(encode(document, reseal=False))
    assert locs(error) == {("integrity", "payload_sha256")}
    assert error.code is ErrorCode.PAYLOAD_DIGEST_MISMATCH


def test_unknown_field_is_refused_not_dropped() -> None:
    """An unknown field anywhere (envelope, payload, deep inside) is an error at its place."""
    document = load_sample("BD-LY-2025-0007_01_MLA_REQUEST.json")
    document["priority_lane"] = "fast"
    document["payload"]["urgency"]["colour"] = "red"
    document["payload"]["assistance_requested"][4]["details"]["drone"] = True
    error = refused(encode(document))
    assert {
        ("priority_lane",),
        ("payload", "urgency", "colour"),
        ("payload", "assistance_requested", 4, "details", "drone"),
    } <= locs(error)


def test_string_is_not_accepted_for_a_number_or_a_boolean() -> None:
    """Strict JSON mode: "5" is not 5 and "true" is not true."""
    document = load_sample("BD-LY-2025-0007_08_POSTPONEMENT.json")
    document["sequence"] = "8"
    document["payload"]["expected_duration_days"] = "60"
    document["test_data"] = "true"
    error = refused(encode(document))
    assert {("sequence",), ("payload", "expected_duration_days"), ("test_data",)} <= locs(error)


def test_arabic_and_bengali_text_is_not_altered() -> None:
    """Arabic and Bengali text, with spaces, marks and joiners around it, pass byte for byte."""
    document = load_sample("LY-BD-2025-0003_01_MLA_REQUEST.json")
    arabic = "  يُعاقَب بالحبس\u200f مدة لا تزيد على سنة\u0640\u0640 "
    bengali = "\u2068মোঃ শফিকুল ইসলাম\u2069 \u09e7\u09e8\u09e9 ক্\u200dষ \n"
    decomposed = "e\u0301"  # not NFC: normalisation would make it "é"
    document["payload"]["offences"][0]["statutory_text"]["value"] = arabic
    document["payload"]["persons"][0]["names"][1]["full"] = bengali
    document["payload"]["purpose"]["text"]["translations"]["en"] = decomposed
    raw = encode(document)
    request = validate_document(raw).payload
    assert isinstance(request, MlaRequest)
    statutory = request.offences[0].statutory_text
    assert statutory is not None
    assert statutory.value.encode() == arabic.encode()
    assert request.persons[0].names[1].full.encode() == bengali.encode()
    assert request.purpose.text.translations["en"] == decomposed


def test_look_alike_letters_in_machine_values_are_refused() -> None:
    """A Cyrillic letter in a language tag or country code is refused, not folded."""
    document = load_sample("BD-LY-2025-0007_09_STATUS_INQUIRY.json")
    document["payload"]["text"]["lang"] = "\u0435n"  # Cyrillic small ie, then Latin n
    document["sender"]["state"] = "\u0412D"  # Cyrillic capital ve, then Latin D
    error = refused(encode(document))
    assert {("payload", "text", "lang"), ("sender", "state")} <= locs(error)


def test_request_missing_elements_names_every_missing_field() -> None:
    """A request missing the 18(15) elements is refused with every one named at once."""
    document = load_sample("BD-LY-2025-0007_01_MLA_REQUEST.json")
    payload = document["payload"]
    for key in ("requesting_authority", "proceeding", "facts_summary", "assistance_requested", "purpose"):
        del payload[key]
    del payload["conducting_authority"]["functions"]
    payload["persons"] = []  # "where possible": not an error
    error = refused(encode(document))
    expected = {
        ("payload", "requesting_authority"),
        ("payload", "proceeding"),
        ("payload", "conducting_authority", "functions"),
        ("payload", "facts_summary"),
        ("payload", "assistance_requested"),
        ("payload", "purpose"),
    }
    assert expected <= locs(error)
    assert not any(loc[:2] == ("payload", "persons") for loc in locs(error))


def test_service_only_request_needs_no_facts_summary() -> None:
    """A request whose items all serve documents is valid without facts (UNTOC 18(15)(c))."""
    document = load_sample("LY-BD-2025-0009_01_MLA_REQUEST.json")
    assert "facts_summary" not in document["payload"]
    validate_document(encode(document))


def test_service_and_other_items_need_facts_summary() -> None:
    """Adding one item that is not service of documents makes the facts required again."""
    document = load_sample("LY-BD-2025-0009_01_MLA_REQUEST.json")
    document["payload"]["assistance_requested"].append(
        {
            "item_id": "E2",
            "type": "criminal_record_extract",
            "description": {"lang": "en", "value": "Criminal record of SV1"},
            "person_refs": ["SV1"],
        }
    )
    assert ("payload", "facts_summary") in locs(refused(encode(document)))


def test_unknown_message_type_is_refused_with_the_envelope_errors() -> None:
    """An unknown type is refused at message_type, and other envelope errors still show."""
    document = load_sample("BD-LY-2025-0007_09_STATUS_INQUIRY.json")
    document["message_type"] = "STATUS_QUERY"
    document["channel"] = "carrier_pigeon"
    error = refused(encode(document))
    assert {("message_type",), ("channel",)} <= locs(error)


def test_unsupported_schema_version_is_refused_with_its_code() -> None:
    """A document of another schema version is refused with UNSUPPORTED_VERSION."""
    document = load_sample("BD-LY-2025-0007_09_STATUS_INQUIRY.json")
    document["schema"] = "mla-exchange/2.0"
    error = refused(encode(document))
    assert error.code is ErrorCode.UNSUPPORTED_VERSION
    assert ("schema",) in locs(error)


def test_agent_filled_fields_may_be_absent() -> None:
    """message_id, created_at, sequence and integrity may be left for the agent to fill in."""
    document = load_sample("BD-LY-2025-0007_09_STATUS_INQUIRY.json")
    for key in ("message_id", "created_at", "sequence", "integrity"):
        del document[key]
    accepted = validate_document(encode(document))
    assert accepted.message_id is None
    assert accepted.created_at is None


def test_party_must_belong_to_its_state_and_differ_from_the_other() -> None:
    """A sender whose agency is of another State, or a message to oneself, is refused."""
    document = load_sample("BD-LY-2025-0007_09_STATUS_INQUIRY.json")
    document["sender"]["state"] = "LY"
    document["recipient"]["authority_id"] = "BD-MOHA-PSD"
    document["recipient"]["state"] = "BD"
    error = refused(encode(document))
    assert ("sender", "authority_id") in locs(error)


def test_request_states_must_match_its_parties() -> None:
    """A request whose requested State is not its recipient's is refused at the field."""
    document = load_sample("BD-LY-2025-0014_01_MLA_REQUEST.json")
    document["payload"]["requested_state"] = "AE"
    document["payload"]["addressed_to"]["country"] = "AE"
    del document["payload"]["addressed_to"]["authority_id"]
    error = refused(encode(document))
    assert ("payload", "requested_state") in locs(error)


def test_payload_errors_carry_no_union_tag_in_their_location() -> None:
    """Errors inside an assistance item read (…, item index, field), without a type tag."""
    document = load_sample("BD-LY-2025-0007_01_MLA_REQUEST.json")
    del document["payload"]["assistance_requested"][4]["location"]
    error = refused(encode(document))
    assert ("payload", "assistance_requested", 4, "location") in locs(error)
    assert all("search_and_seizure" not in loc for loc in locs(error))


def test_sample_warnings_are_given_not_raised() -> None:
    """The LY-BD smuggling request is valid but warned about the UNTOC threshold (R5)."""
    document = validate_document(encode(load_sample("LY-BD-2025-0003_01_MLA_REQUEST.json")))
    rules = {warning.rule for warning in document_warnings(document)}
    assert Rule.R5_SERIOUS_CRIME in rules
    clean = validate_document(encode(load_sample("BD-LY-2025-0007_09_STATUS_INQUIRY.json")))
    assert document_warnings(clean) == ()


def test_python_built_document_must_match_its_type() -> None:
    """A document built in Python with a payload of another type is refused."""
    inquiry = validate_document(encode(load_sample("BD-LY-2025-0007_09_STATUS_INQUIRY.json")))
    refusal = validate_document(encode(load_sample("BD-LY-2025-0014_05_REFUSAL.json")))
    assert isinstance(refusal.payload, Refusal)
    fields: dict[str, Any] = {**dict(inquiry), "payload": refusal.payload}
    with pytest.raises(ValueError, match="payload"):
        MessageDocument(**fields)


def test_document_json_round_trips_through_its_own_dump() -> None:
    """A validated document dumped to JSON (by alias, unset fields left out) validates again."""
    original = validate_document(encode(load_sample("BD-LY-2025-0011_04_WITHDRAWAL.json")))
    dumped = original.model_dump(mode="json", exclude_unset=True)
    assert dumped["schema"] == "mla-exchange/1.0"
    again = validate_document(json.dumps(dumped).encode())
    assert again == original
