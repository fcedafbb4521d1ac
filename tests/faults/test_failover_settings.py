"""The settings and parsing behind failover and dead letters, without a broker."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from agents.settings import AgentSettings
from gateway.deadletters import establish_death
from gateway.settings import GatewaySettings
from gateway.transport import DeadDelivery
from protocol.auditlog import DeadLetterLeaf, RejectedInputLeaf, dead_letter_identity, decode_leaf, encode_leaf
from protocol.evidence import Reason
from runtime.broker import BrokerEndpoints, endpoints_from_setting, node_of
from runtime.errors import ConfigurationError

TOKEN = "0" * 64
CLUSTER = "amqp://gw:pw@127.0.0.1:5701/net,amqp://gw:pw@127.0.0.1:5702/net, amqp://gw:pw@127.0.0.1:5703/net"


def gateway_environ(amqp_url: str) -> dict[str, str]:
    base = "/srv/rogatory"  # never read: settings only parse
    return {
        "ROGATORY_AMQP_URL": amqp_url,
        "ROGATORY_DATA_DIR": base,
        "ROGATORY_DIRECTORY_FILE": f"{base}/directory.json",
        "ROGATORY_AUTHORITY_KEY": "k",
        "ROGATORY_KEYSTORE_FILE": f"{base}/keystore.json",
        "ROGATORY_KEYSTORE_PASSPHRASE_FILE": f"{base}/passphrase",
        "ROGATORY_OPERATOR_TOKEN_SHA256": TOKEN,
        "ROGATORY_AUDITOR_TOKEN_SHA256": TOKEN,
    }


def test_a_cluster_is_one_identity_on_several_nodes_tried_in_order():
    """ROGATORY_AMQP_URL may list the nodes of a cluster; they keep their order, user and vhost."""
    settings = GatewaySettings.from_environ(gateway_environ(CLUSTER))
    endpoints = endpoints_from_setting(settings.amqp_url, heartbeat_s=settings.amqp_heartbeat_s)
    assert [node_of(url) for url in endpoints.urls] == ["127.0.0.1:5701", "127.0.0.1:5702", "127.0.0.1:5703"]
    assert (endpoints.broker_user, endpoints.vhost, endpoints.heartbeat_s) == ("gw", "net", 10)
    assert endpoints_from_setting(CLUSTER, heartbeat_s=5).urls == endpoints.urls


def test_one_url_behaves_as_before():
    """A single URL is a cluster of one: same user, the default vhost when it names none."""
    endpoints = BrokerEndpoints(urls=("amqp://guest:guest@127.0.0.1:5672/",))
    assert (endpoints.broker_user, endpoints.vhost) == ("guest", "/")


@pytest.mark.parametrize(
    "amqp_url",
    [
        "amqp://gw:pw@127.0.0.1:5701/net,amqp://other:pw@127.0.0.1:5702/net",
        "amqp://gw:pw@127.0.0.1:5701/net,amqp://gw:pw@127.0.0.1:5702/elsewhere",
        "amqp://gw:pw@127.0.0.1:5701/net,http://127.0.0.1:15672",
    ],
)
def test_nodes_of_different_identities_are_refused(amqp_url):
    """Every node of the list must be the same identity in the same vhost: a mix is a configuration error."""
    with pytest.raises(ConfigurationError, match="AMQP_URL"):
        GatewaySettings.from_environ(gateway_environ(amqp_url))
    environ = gateway_environ(amqp_url) | {
        "ROGATORY_AGENCY": "BD-MOHA-PSD",
        "ROGATORY_API_TOKENS_SHA256": TOKEN,
        "ROGATORY_GATEWAY_BROKER_USER": "gw",
    }
    with pytest.raises(ConfigurationError, match="AMQP_URL"):
        AgentSettings.from_environ(environ)


def test_a_dead_letter_is_named_by_its_publisher_and_the_brokers_newest_death():
    """An inbox only for what the gateway published (reason, time, count: the broker's first `x-death` entry);
    the ingress for anything else, whatever `x-first-death-*` and older `x-death` entries claim."""
    died = datetime(2026, 11, 29, 10, 0, 5, tzinfo=UTC)
    headers: dict[str, object] = {
        "x-first-death-queue": "mla.inbox.LY-MLA-CA",
        "x-first-death-reason": "delivery_limit",
        "x-death": [
            {"queue": "mla.inbox.LY-MLA-CA", "reason": b"delivery_limit", "count": 1, "time": died},
        ],
    }

    def dead(user_id: str | None, headers: dict[str, object]) -> DeadDelivery:
        return DeadDelivery(body=b"x", kind=None, user_id=user_id, amqp_message_id=None, headers=headers)

    death = establish_death(dead("gw", headers), gateway_user="gw")
    assert (death.queue, death.reason, death.count, death.by_gateway) == (
        "mla.inbox.LY-MLA-CA",
        "delivery_limit",
        1,
        True,
    )
    assert death.died_at.startswith("2026-11-29T10:00:05")
    forged = establish_death(dead("net.BD-MOHA-PSD", headers), gateway_user="gw")
    assert (forged.queue, forged.reason, forged.count, forged.died_at) == ("mla.gateway.ingress", "unknown", 0, "-")
    assert establish_death(dead("gw", {}), gateway_user="gw").queue == "-"
    assert establish_death(dead(None, {}), gateway_user="gw").queue == "mla.gateway.ingress"


def test_leaves_with_absent_optional_fields_decode_as_they_were_logged():
    """A leaf whose optional fields are absent (no publisher) is encoded without them and decodes the same."""
    leaf = RejectedInputLeaf(
        identity="rejected/-/" + "b" * 64,
        at=datetime(2026, 11, 29, 10, 0, 6, tzinfo=UTC),
        publisher=None,
        input_kind="-",
        body_sha256="b" * 64,
        body_length=3,
        reason=Reason(code="BROKER_USER_MISMATCH", detail="published without user_id"),
    )
    assert b"publisher" not in encode_leaf(leaf)
    assert decode_leaf(encode_leaf(leaf)) == leaf


def test_a_dead_letter_leaf_round_trips_and_carries_no_content():
    """The `dead_letter` leaf is a known kind of the log: metadata and digest, never the body."""
    identity = dead_letter_identity("mla.gateway.ingress", "2026-11-29T10:00:05.000Z", "a" * 64)
    leaf = DeadLetterLeaf(
        identity=identity,
        at=datetime(2026, 11, 29, 10, 0, 6, tzinfo=UTC),
        queue="mla.gateway.ingress",
        reason="delivery_limit",
        died_at="2026-11-29T10:00:05.000Z",
        death_count=1,
        publisher="rogatory-x.BD-MOHA-PSD",
        input_kind="rogatory.sealed-message.v1",
        message_id=None,  # no AMQP message id was claimed: absent from the leaf
        body_sha256="a" * 64,
        body_length=4830,
    )
    assert decode_leaf(encode_leaf(leaf)) == leaf
    assert identity == "dead/mla.gateway.ingress/2026-11-29T10:00:05.000Z/" + "a" * 64
