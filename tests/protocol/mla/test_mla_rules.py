"""The legal rules: each refusal names its field, each warning stays a warning."""

import copy
from typing import Any

import pytest

from protocol.errors import ContentInvalid
from protocol.mla import validate_document
from protocol.mla.rules import Rule, document_warnings
from tests.protocol.mla.mla_samples import encode, load_sample

REQUEST = "BD-LY-2025-0007_01_MLA_REQUEST.json"
REFUSAL = "BD-LY-2025-0014_05_REFUSAL.json"
POSTPONEMENT = "BD-LY-2025-0007_08_POSTPONEMENT.json"


def error_locs(document: dict[str, Any]) -> set[tuple[str | int, ...]]:
    with pytest.raises(ContentInvalid) as caught:
        validate_document(encode(document))
    return {error.loc for error in caught.value.errors}


def request() -> dict[str, Any]:
    return load_sample(REQUEST)


def test_fiscal_ground_is_refused() -> None:
    """A refusal on fiscal matters is refused at the ground's code (UNTOC 18(22), R2)."""
    document = load_sample(REFUSAL)
    document["payload"]["grounds"][0]["code"] = "FISCAL_OFFENCE_ONLY"
    assert ("payload", "grounds", 0, "code") in error_locs(document)


def test_bank_secrecy_is_refused_in_any_message_with_grounds() -> None:
    """Bank secrecy is no ground in a postponement or consultation either."""
    document = load_sample(POSTPONEMENT)
    document["payload"]["grounds"][0]["code"] = "BANK_SECRECY"
    assert ("payload", "grounds", 0, "code") in error_locs(document)


def test_refusal_with_recorded_waiver_of_consultation_is_accepted() -> None:
    """A refusal without consultation is valid when it records why there was none."""
    document = load_sample(REFUSAL)
    del document["payload"]["consultation_ref"]
    document["payload"]["consultation_waived_reason"] = {"lang": "en", "value": "Requesting State declined."}
    validate_document(encode(document))


def test_postponement_without_consultation_is_refused() -> None:
    """A postponement with neither consultation nor waiver is refused (UNTOC 18(26), R4)."""
    document = load_sample(POSTPONEMENT)
    del document["payload"]["consultation_ref"]
    assert ("payload", "consultation_ref") in error_locs(document)


def test_item_scope_needs_items_and_whole_scope_takes_none() -> None:
    """scope=items needs item_refs; scope=whole_request takes none."""
    items_without_refs = load_sample(REFUSAL)
    items_without_refs["payload"]["item_refs"] = []
    assert ("payload", "item_refs") in error_locs(items_without_refs)
    whole_with_refs = load_sample(REFUSAL)
    whole_with_refs["payload"]["scope"] = "whole_request"
    assert ("payload", "item_refs") in error_locs(whole_with_refs)


def test_emergency_without_reasons_is_refused() -> None:
    """An emergency request must say why it is one."""
    document = request()
    document["payload"]["urgency"] = {"level": "emergency"}
    assert ("payload", "urgency", "reasons") in error_locs(document)


def test_item_deadline_without_reason_is_refused() -> None:
    """An item-level deadline needs its reasons too (UNTOC 18(24))."""
    document = request()
    document["payload"]["assistance_requested"][0]["deadline"] = "2025-05-01"
    assert ("payload", "assistance_requested", 0, "deadline_reason") in error_locs(document)


def test_deadline_before_the_request_date_is_refused() -> None:
    """R10: a deadline before the request's signature date is refused."""
    document = request()
    document["payload"]["urgency"]["requested_deadline"] = "2025-01-01"
    assert ("payload", "urgency", "requested_deadline") in error_locs(document)


def test_unresolved_references_are_refused() -> None:
    """R7: an item naming an unknown person or procedure is refused at the reference."""
    document = request()
    document["payload"]["assistance_requested"][1]["person_refs"].append("V99")
    document["payload"]["assistance_requested"][1]["procedure_refs"].append("P99")
    document["payload"]["procedures"][0]["applies_to_items"].append("A9")
    locs = error_locs(document)
    assert {
        ("payload", "assistance_requested", 1, "person_refs", 2),
        ("payload", "assistance_requested", 1, "procedure_refs", 5),
        ("payload", "procedures", 0, "applies_to_items", 2),
    } <= locs


def test_confiscation_of_an_undescribed_asset_is_refused() -> None:
    """R7: a confiscation item may only refer to assets a freezing item describes."""
    document = load_sample("BD-LY-2025-0014_01_MLA_REQUEST.json")
    document["payload"]["assistance_requested"][2]["details"]["assets"].append("AS9")
    assert ("payload", "assistance_requested", 2, "details", "assets", 2) in error_locs(document)


def test_duplicate_item_ids_are_refused() -> None:
    """Two items with one id could not be told apart later."""
    document = request()
    document["payload"]["assistance_requested"][1]["item_id"] = "A1"
    assert ("payload", "assistance_requested", 1, "item_id") in error_locs(document)


def test_protected_victim_without_pseudonym_or_restriction_is_refused() -> None:
    """R8: with victim identity protection, a victim needs a pseudonym and a restricted identity."""
    document = request()
    victim = document["payload"]["persons"][3]
    assert "victim" in victim["roles"]
    del victim["pseudonym"]
    victim["identity_restricted"] = False
    assert {
        ("payload", "persons", 3, "pseudonym"),
        ("payload", "persons", 3, "identity_restricted"),
    } <= error_locs(document)


def test_protected_victim_named_in_the_facts_is_refused() -> None:
    """R8: the facts summary must use the pseudonym, not the victim's name."""
    document = request()
    name = document["payload"]["persons"][3]["names"][0]["full"]
    document["payload"]["facts_summary"]["text"]["value"] += f" {name} was beaten."
    assert ("payload", "facts_summary", "text") in error_locs(document)


def test_search_without_location_or_basis_for_belief_is_refused() -> None:
    """A search item must say where and why the items are believed to be there."""
    document = request()
    item = document["payload"]["assistance_requested"][4]
    assert item["type"] == "search_and_seizure"
    del item["location"]
    del item["basis_for_belief"]
    del item["details"]["items_sought"]
    assert {
        ("payload", "assistance_requested", 4, "location"),
        ("payload", "assistance_requested", 4, "basis_for_belief"),
        ("payload", "assistance_requested", 4, "details", "items_sought"),
    } <= error_locs(document)


def test_unknown_assistance_type_is_refused_at_its_type() -> None:
    """An item of an unknown type is refused at its `type`, with the allowed types named."""
    document = request()
    document["payload"]["assistance_requested"][0]["type"] = "telepathy"
    assert ("payload", "assistance_requested", 0, "type") in error_locs(document)


def test_every_assistance_type_refuses_unknown_detail_keys() -> None:
    """The details of an item are a closed model: a misspelt key is refused, not ignored."""
    document = request()
    document["payload"]["assistance_requested"][1]["details"]["capacityy"] = "witness"
    assert ("payload", "assistance_requested", 1, "details", "capacityy") in error_locs(document)


def test_impossible_item_without_reason_is_refused() -> None:
    """An execution response reporting an impossible item must say why."""
    document = load_sample("BD-LY-2025-0011_05_FINAL_EXECUTION.json")
    document["payload"]["items"][0]["status"] = "impossible"
    assert ("payload", "items", 0, "impossibility_reason") in error_locs(document)


def test_execution_response_cannot_report_a_refusal() -> None:
    """A refusal travels as a REFUSAL with reasons and consultation, not as an item result."""
    document = load_sample("BD-LY-2025-0011_05_FINAL_EXECUTION.json")
    document["payload"]["items"][0]["status"] = "refused"
    assert ("payload", "items", 0, "status") in error_locs(document)


def test_acceptance_with_conditions_states_them() -> None:
    """An execution decision "accepted_with_conditions" without conditions is refused."""
    document = load_sample("BD-LY-2025-0007_07_EXECUTION_DECISION.json")
    document["payload"]["conditions"] = []
    assert ("payload", "conditions") in error_locs(document)


def test_translation_into_the_original_language_is_refused() -> None:
    """A text cannot carry a 'translation' into its own language: two authentic texts."""
    document = load_sample("BD-LY-2025-0007_09_STATUS_INQUIRY.json")
    document["payload"]["text"]["translations"] = {"en": "Another English text"}
    assert ("payload", "text", "translations") in error_locs(document)


def test_impossible_partial_date_is_refused() -> None:
    """A partial date must be a calendar date: 2024-13 is not a month."""
    document = request()
    document["payload"]["facts_summary"]["period"]["from"] = "2024-13"
    assert ("payload", "facts_summary", "period", "from") in error_locs(document)


def test_serious_crime_threshold_only_warns() -> None:
    """R5: a request whose only offence carries one year is valid, with a warning."""
    document = load_sample("LY-BD-2025-0009_01_MLA_REQUEST.json")
    accepted = validate_document(encode(document))
    warnings = document_warnings(accepted)
    assert any(w.rule is Rule.R5_SERIOUS_CRIME and w.loc == ("payload", "offences") for w in warnings)


def test_citing_the_protocol_brings_its_offence_within_untoc() -> None:
    """R5: citing the Smuggling Protocol makes a smuggling offence a Convention offence."""
    document = load_sample("LY-BD-2025-0009_01_MLA_REQUEST.json")
    document["payload"]["legal_basis"].append({"instrument": "UNTOC_SOM_PROTOCOL", "role": "supplementary"})
    warnings = document_warnings(validate_document(encode(document)))
    assert not any(w.rule is Rule.R5_SERIOUS_CRIME and w.loc == ("payload", "offences") for w in warnings)


def test_language_channel_and_oral_confirmation_warnings() -> None:
    """R6, R9 and R14 warn: untranslated request, late confirmation, non-diplomatic channel to BD."""
    document = load_sample("LY-BD-2025-0009_01_MLA_REQUEST.json")
    document["payload"]["language"]["translations_provided"] = []
    document["payload"]["related_requests"] = [
        {"ref": "phone call", "relation": "confirms_oral_request", "date": "2025-08-01"}
    ]
    document["channel"] = "central_authority_direct"
    rules = {w.rule for w in document_warnings(validate_document(encode(document)))}
    assert {Rule.R6_LANGUAGE, Rule.R9_ORAL_REQUEST_CONFIRMED, Rule.R14_CHANNEL} <= rules


def test_all_rule_errors_of_a_request_are_reported_together() -> None:
    """Several cross-field violations of one request come back in one refusal."""
    document = copy.deepcopy(request())
    document["payload"]["urgency"]["requested_deadline"] = "2025-01-01"
    document["payload"]["assistance_requested"][0]["person_refs"].append("X1")
    del document["payload"]["persons"][4]["pseudonym"]
    locs = error_locs(document)
    assert {
        ("payload", "urgency", "requested_deadline"),
        ("payload", "assistance_requested", 0, "person_refs", 2),
        ("payload", "persons", 4, "pseudonym"),
    } <= locs
