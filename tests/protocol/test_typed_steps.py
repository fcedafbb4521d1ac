"""Each check of the envelope returns a value only it can make, and the next check takes only that value.

mypy's strict run over the tests proves the static half: each `type: ignore[arg-type]`
below is needed (an unneeded one fails `warn_unused_ignores`), so the call it marks is
one mypy refuses. The tests prove the run-time half.
"""

from __future__ import annotations

import dataclasses

import pytest

from protocol.envelope import (
    AuthenticatedHeader,
    FreshHeader,
    OpenedMessage,
    authenticate_header,
    check_freshness,
    open_authenticated,
    open_sealed,
)
from tests.support.network import LY, NOW, LocalNetwork


@pytest.fixture
def net() -> LocalNetwork:
    return LocalNetwork()


@pytest.mark.parametrize("made_by_a_check", [AuthenticatedHeader, FreshHeader, OpenedMessage])
def test_a_verified_value_built_outside_its_check_is_refused(made_by_a_check):
    """No code outside `protocol.envelope` can build an authenticated, fresh or opened value."""
    forged = {field.name: None for field in dataclasses.fields(made_by_a_check)} | {"step": object()}
    with pytest.raises(TypeError, match=r"made only by the checks of protocol\.envelope"):
        made_by_a_check(**forged)


def test_opening_refuses_a_header_that_skipped_the_freshness_check(net):
    """An authenticated but unchecked-for-freshness header cannot be opened (mypy refuses; so does the run)."""
    authenticated = authenticate_header(net.seal(), net.directory(), now=NOW)
    with pytest.raises(AttributeError):
        open_authenticated(
            authenticated,  # type: ignore[arg-type]
            recipient=LY,
            recipient_keys=net[LY].decryption_keys,
        )


def test_opening_takes_the_authenticated_header_and_does_not_verify_it_again(net):
    """`open_authenticated` needs no directory: the header it opens was authenticated once, by its check."""
    sealed = net.seal()
    fresh = check_freshness(authenticate_header(sealed, net.directory(), now=NOW), now=NOW, limits=net.limits)
    opened = open_authenticated(fresh, recipient=LY, recipient_keys=net[LY].decryption_keys)
    assert opened == open_sealed(
        sealed, net.directory(), recipient=LY, recipient_keys=net[LY].decryption_keys, now=NOW, limits=net.limits
    )
    assert fresh.authenticated.sealed is sealed
