"""The pipeline's checks narrow a type each, and its states and outcomes are enums stored as their old strings.

mypy's strict run over the tests proves the static half: each `type: ignore[arg-type]`
below is needed (an unneeded one fails `warn_unused_ignores`), so the call it marks is
one mypy refuses.
"""

from __future__ import annotations

import dataclasses

import pytest

from gateway import pipeline as steps
from gateway.pipeline import OutcomeKind, OutcomeResult
from gateway.store import MessageState, RelayState
from protocol.envelope import authenticate_header
from protocol.evidence import EvidenceType
from tests.gateway.conftest import Harness
from tests.support.network import BD, LY, NOW

MADE_BY_A_STEP = [
    steps.IdentifiedPublisher,
    steps.AuthenticatedSubmission,
    steps.FreshSubmission,
    steps.NewSubmission,
    steps.Redelivery,
    steps.AllowedSubmission,
    steps.CompleteSubmission,
    steps.AcceptedSubmission,
    steps.AuthenticatedEvidence,
    steps.MatchedEvidence,
    steps.TimelyEvidence,
]


@pytest.mark.parametrize("made_by_a_step", MADE_BY_A_STEP, ids=lambda cls: cls.__name__)
def test_a_verified_value_built_outside_its_step_is_refused(made_by_a_step):
    """No code outside `gateway.pipeline` can build what a step of the pipeline proves."""
    forged = {field.name: None for field in dataclasses.fields(made_by_a_step)} | {"step": object()}
    with pytest.raises(TypeError, match=r"made only by the checks of gateway\.pipeline"):
        made_by_a_step(**forged)


async def test_acceptance_cannot_be_recorded_for_a_header_that_skipped_the_checks(harness: Harness):
    """A header that is only authenticated reaches neither the audit log nor the store as accepted."""
    authenticated = authenticate_header(harness.net.seal(), harness.net.directory(), now=NOW)
    leaves_before = await harness.leaves()
    with pytest.raises(AttributeError):
        await harness.pipeline.record_acceptance(authenticated, NOW)  # type: ignore[arg-type]
    assert await harness.leaves() == leaves_before
    assert await harness.store.message(BD, str(authenticated.header.message_id)) is None


async def test_a_step_takes_only_the_value_of_the_step_before(harness: Harness):
    """Each step runs on what the step before returned, in the order of the module docstring."""
    sealed = harness.net.seal()
    directory = harness.net.directory()
    publisher = harness.pipeline.identify_publisher(harness.delivery(sealed.to_bytes(), publisher=BD), directory)
    fresh = harness.pipeline.check_fresh(harness.pipeline.authenticate_sender(sealed, publisher, directory, NOW), NOW)
    new = await harness.pipeline.check_replay(fresh)
    assert isinstance(new, steps.NewSubmission)
    complete = await harness.pipeline.check_attachments(harness.pipeline.decide(new, directory, NOW))
    accepted = await harness.pipeline.record_acceptance(complete, NOW)
    assert await harness.pipeline.route(accepted, LY) is None
    assert isinstance(await harness.pipeline.check_replay(fresh), steps.Redelivery)


def test_relay_and_message_states_are_the_strings_the_store_always_held():
    """Existing databases still read: each state enum's values are the strings written before it existed."""
    assert {state.value for state in RelayState} == {
        "relayed",
        "relay_failed",
        "delivery",
        "non_delivery",
        "retrieval",
        "non_retrieval",
    }
    assert {state.value for state in MessageState} == {"accepted", "relayed", "dead_lettered"}
    assert {RelayState.after(t) for t in (EvidenceType.DELIVERY, EvidenceType.NON_RETRIEVAL)} == {
        "delivery",
        "non_retrieval",
    }


async def test_stored_states_are_plain_strings_and_read_back_as_enums(harness: Harness):
    """The columns hold the old strings; the store hands back the enums."""
    sealed = harness.net.seal()
    await harness.pipeline.handle(harness.delivery(sealed.to_bytes(), publisher=BD))
    message_id = harness.broker.confirmed[-1].message_id
    record = await harness.store.message(BD, message_id)
    assert record is not None
    assert record.state is MessageState.RELAYED
    assert await harness.store.relay_state(BD, message_id, LY) is RelayState.RELAYED
    async with harness.store.transaction() as tx:
        await tx.set_relay_state(BD, message_id, LY, RelayState.DELIVERY, "2026-01-01T00:00:00.000Z")
    [relay] = await harness.store.relays_in_state(RelayState.DELIVERY)
    assert (relay.state, type(relay.state)) == ("delivery", RelayState)


def test_outcomes_are_the_labels_metrics_and_logs_always_had():
    """Dashboards keep working: outcome enums equal the strings they replace."""
    assert {kind.value for kind in OutcomeKind} == {"message", "evidence", "unknown"}
    assert {result.value for result in OutcomeResult} == {"relayed", "duplicate", "rejected", "forwarded"}
