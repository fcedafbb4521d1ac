"""Properties over generated documents: round trips are exact, tampering is caught."""

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.encoding import canonical_json, parse_json_strict
from protocol.errors import ContentInvalid
from protocol.limits import DEFAULT_LIMITS
from protocol.mla import CONTENT_MODELS, MessageType, validate_document
from tests.protocol.mla.mla_strategies import PARTIES, acknowledgements, documents, mla_requests, texts

GENERATED = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def seal_and_validate(document: dict[str, Any]) -> Any:
    raw = canonical_json(document)
    parse_json_strict(raw, max_bytes=DEFAULT_LIMITS.max_document_bytes, max_depth=DEFAULT_LIMITS.max_json_depth)
    return validate_document(raw)


@GENERATED
@given(documents())
def test_generated_documents_round_trip_through_canonical_json(document: dict[str, Any]) -> None:
    """Any generated document validates from its RFC 8785 bytes and dumps back to the same JSON."""
    validated = seal_and_validate(document)
    assert isinstance(validated.payload, CONTENT_MODELS[MessageType(document["message_type"])])
    dumped = validated.model_dump(mode="json", exclude_unset=True)
    assert dumped == document
    assert canonical_json(dumped) == canonical_json(document)


@GENERATED
@given(st.data())
def test_generated_requests_round_trip_in_both_directions(data: st.DataObject) -> None:
    """MLA_REQUEST payloads from either State, with any text, come back unchanged."""
    requesting, requested = data.draw(st.permutations(PARTIES))
    payload = data.draw(mla_requests(requesting, requested))
    document = data.draw(documents())
    document.update(
        message_type="MLA_REQUEST",
        sender={"state": requesting[0], "authority_id": requesting[1]},
        recipient={"state": requested[0], "authority_id": requested[1]},
        payload=payload,
    )
    del document["integrity"]
    assert seal_and_validate(document).payload.model_dump(mode="json", exclude_unset=True) == payload


@GENERATED
@given(st.data())
def test_generated_acknowledgements_keep_their_local_times(data: st.DataObject) -> None:
    """An acknowledgement's received_at keeps the offset its author wrote."""
    document = data.draw(documents())
    requested = (document["sender"]["state"], document["sender"]["authority_id"])
    payload = data.draw(acknowledgements(requested))
    document.update(message_type="ACKNOWLEDGEMENT", payload=payload)
    del document["integrity"]
    validated = seal_and_validate(document)
    assert validated.payload.model_dump(mode="json", exclude_unset=True)["received_at"] == payload["received_at"]


@GENERATED
@given(documents(), texts)
def test_changing_the_payload_without_resealing_is_caught(document: dict[str, Any], extra: str) -> None:
    """Any change to the payload after sealing is reported at integrity.payload_sha256."""
    document["payload"]["tampered_by"] = extra
    with pytest.raises(ContentInvalid) as caught:
        validate_document(canonical_json(document))
    locs = {error.loc for error in caught.value.errors}
    assert ("integrity", "payload_sha256") in locs
    assert ("payload", "tampered_by") in locs


@GENERATED
@given(documents(), st.sampled_from(["sequence", "message_type", "channel", "case_id", "created_at"]))
def test_wrongly_typed_envelope_field_is_named(document: dict[str, Any], field: str) -> None:
    """Replacing an envelope field by a value of the wrong JSON type is reported at that field."""
    document[field] = [document[field]]
    with pytest.raises(ContentInvalid) as caught:
        validate_document(canonical_json(document))
    assert (field,) in {error.loc for error in caught.value.errors}
