"""The recipient's checks narrow a type each: what is stored was validated and is not a replay."""

from __future__ import annotations

import dataclasses

import pytest

from agents.receiving import AllowedHeader, ReceivedResult, UnseenMessage, ValidMessage


@pytest.mark.parametrize("made_by_a_check", [AllowedHeader, ValidMessage, UnseenMessage], ids=lambda cls: cls.__name__)
def test_a_verified_value_built_outside_its_check_is_refused(made_by_a_check):
    """No code outside `agents.receiving` can build an allowed header, a validated or an unseen message."""
    forged = {field.name: None for field in dataclasses.fields(made_by_a_check)} | {"step": object()}
    with pytest.raises(TypeError, match=r"made only by the checks of agents\.receiving"):
        made_by_a_check(**forged)


def test_receiving_results_are_the_labels_metrics_and_logs_always_had():
    """Dashboards keep working: result enums equal the strings they replace."""
    assert {result.value for result in ReceivedResult} == {"delivered", "duplicate", "refused", "dropped", "kept"}
