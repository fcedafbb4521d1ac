"""An agent watches its own TLS certificates: `/healthz` lists them and alarms within 30 days of expiry or when a
file is unreadable, and `/metrics` exports them as the gateway does, so the same alert rules cover agents."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from agents.health import AgentHealth
from agents.metrics import METRIC_NAMES, AgentMetrics
from agents.settings import AgentSettings
from protocol.ids import AgencyId
from runtime.certificates import CERTIFICATE_WARNING
from runtime.directory import DirectoryWatch
from tests.agents.harness import InProcessAgent, start_agent
from tests.support.certificates import pem_certificate
from tests.support.network import NOW, LocalNetwork

BD = AgencyId("BD-MOHA-PSD")
NOT_PEM = "expected one or more PEM certificates; found none that parse"
RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rogatory-alerts.yml"
SETTINGS: dict[str, Any] = {
    "amqp_url": "amqp://u:p@127.0.0.1:5672/net",
    "data_dir": "/srv/rogatory",
    "directory_file": "/srv/rogatory/directory.json",
    "authority_key": "k",
    "keystore_file": "/srv/rogatory/keystore.json",
    "keystore_passphrase_file": "/srv/rogatory/passphrase",
    "agency": BD,
    "api_tokens_sha256": ("0" * 64,),
    "gateway_broker_user": "gateway",
}


def _health(net: LocalNetwork, settings: AgentSettings, tmp_path: Path) -> AgentHealth:
    """The agent's health answer over these settings' certificates, its inbox up, its clock at `NOW`."""
    directory = DirectoryWatch(
        tmp_path / "directory.json",
        authority=net.authority.public_key,
        directory=net.directory(),
        clock=lambda: NOW,
        limits=net.limits,
        interval_s=5.0,
    )
    return AgentHealth(
        agency=BD,
        inbox_connected=lambda: True,
        directory=directory,
        auditing=None,
        certificates=settings.watched_certificates,
        clock=lambda: NOW,
    )


@pytest.fixture
def net() -> LocalNetwork:
    return LocalNetwork()


@pytest.fixture
def serving(net: LocalNetwork, tmp_path: Path) -> tuple[AgentHealth, AgentSettings]:
    """Health over an HTTPS certificate expiring in 10 days."""
    certificate = tmp_path / "agent-api.pem"
    certificate.write_bytes(pem_certificate("bd-agent.example", "Test network CA", NOW + timedelta(days=10)))
    settings = AgentSettings.model_validate(
        SETTINGS | {"http_tls_cert_file": certificate, "http_tls_key_file": tmp_path / "agent-api-key.pem"}
    )
    return _health(net, settings, tmp_path), settings


async def _healthz(
    net: LocalNetwork, health: AgentHealth, tmp_path: Path
) -> tuple[int, dict[str, Any], InProcessAgent]:
    """`GET /healthz` of an in-process agent answering `health` (the caller closes the agent)."""
    agent = await start_agent(net, net.directory(), BD, tmp_path, health=health)
    status, answer = await agent.call("GET", "/healthz")
    return status, answer, agent


async def test_an_agent_https_certificate_expiring_within_30_days_alarms_in_healthz_and_metrics(
    net: LocalNetwork, serving: tuple[AgentHealth, AgentSettings], tmp_path: Path
):
    """An agent whose HTTPS certificate ends in 10 days lists it in `/healthz` (path, subject, end, days left)
    with an alarm, and exports its end as `rogatory_certificate_expiry_timestamp_seconds`, which the gateway's
    Prometheus rules read without a service filter."""
    health, settings = serving
    path = str(settings.http_tls_cert_file)
    status, answer, agent = await _healthz(net, health, tmp_path)
    try:
        assert status == 200, "an alarm is not an outage"
        (listed,) = answer["certificates"]
        assert (listed["path"], listed["subject"], listed["days_left"], listed["expiring"]) == (
            path,
            "bd-agent.example",
            10,
            True,
        )
        assert listed["not_after"].startswith((NOW + timedelta(days=10)).date().isoformat())
        assert answer["alarms"] == [
            f"certificate bd-agent.example ({path}) expires in 10 days, at {listed['not_after']}: renew it"
        ]
        metrics = AgentMetrics()
        certificates = health.read_certificates()
        await metrics.refresh(agent.store, health.answer(certificates), NOW, certificates)
    finally:
        await agent.close()
    labels = {"path": path, "subject": "bd-agent.example", "issuer": "Test network CA"}
    value = metrics.registry.get_sample_value
    assert value("rogatory_certificate_expiry_timestamp_seconds", labels) == (NOW + timedelta(days=10)).timestamp()
    assert value("rogatory_certificate_readable", {"path": path}) == 1
    rules = [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]
    certificate_rules = [rule for rule in rules if "rogatory_certificate" in rule["expr"]]
    assert {rule["alert"] for rule in certificate_rules} >= {
        "RogatoryCertificateExpiresSoon",
        "RogatoryCertificateExpired",
        "RogatoryCertificateUnreadable",
    }
    for rule in certificate_rules:
        assert set(re.findall(r"\brogatory_[a-z_]+\b", rule["expr"])) <= METRIC_NAMES
        assert "{" not in rule["expr"], "no selector keeps agents' series out"
    (soon,) = (rule for rule in certificate_rules if rule["alert"] == "RogatoryCertificateExpiresSoon")
    assert f"< {CERTIFICATE_WARNING.days} * 86400" in soon["expr"], "the rule warns when `/healthz` does"


async def test_an_unreadable_watched_certificate_is_an_alarm_not_a_crash(net: LocalNetwork, tmp_path: Path):
    """A missing gateway CA file and a broker client certificate that does not parse each raise a `/healthz`
    alarm naming the file, and `rogatory_certificate_readable` 0; the agent answers, its status unchanged."""
    broken = tmp_path / "client.pem"
    broken.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    missing = tmp_path / "network-ca.pem"
    url = f"amqps://127.0.0.1:5671/net?auth_mechanism=external&cafile={tmp_path / 'broker-ca.pem'}&certfile={broken}"
    settings = AgentSettings.model_validate(SETTINGS | {"amqp_url": url, "gateway_ca_file": missing})
    health = _health(net, settings, tmp_path)
    status, answer, agent = await _healthz(net, health, tmp_path)
    try:
        assert status == 200
        assert [(c["path"], c["readable"]) for c in answer["certificates"]] == [
            (str(missing), False),
            (str(broken), False),
        ]
        assert answer["alarms"] == [
            f"the watched certificate file {missing} is unreadable: cannot read the file: No such file or directory",
            f"the watched certificate file {broken} is unreadable: {NOT_PEM}",
        ]
        metrics = AgentMetrics()
        certificates = health.read_certificates()
        await metrics.refresh(agent.store, health.answer(certificates), NOW, certificates)
    finally:
        await agent.close()
    assert metrics.registry.get_sample_value("rogatory_certificate_readable", {"path": str(missing)}) == 0
    assert metrics.registry.get_sample_value("rogatory_certificate_readable", {"path": str(broken)}) == 0


async def test_an_expired_agent_certificate_is_an_alarm_and_a_valid_one_none(net: LocalNetwork, tmp_path: Path):
    """Past its end the alarm says it expired; more than 30 days away, no alarm, the certificate still listed."""
    expired, valid = tmp_path / "expired.pem", tmp_path / "valid.pem"
    expired.write_bytes(pem_certificate("old", "CA", NOW - timedelta(days=1), NOW - timedelta(days=400)))
    valid.write_bytes(pem_certificate("new", "CA", NOW + timedelta(days=31)))
    settings = AgentSettings.model_validate(
        SETTINGS | {"http_tls_cert_file": valid, "http_tls_key_file": tmp_path / "key.pem", "gateway_ca_file": expired}
    )
    answer = _health(net, settings, tmp_path)()
    assert [(c["subject"], c["expiring"]) for c in answer["certificates"]] == [("new", False), ("old", True)]
    (alarm,) = answer["alarms"]
    assert alarm.startswith(f"certificate old ({expired}) expired at ")


def test_by_default_an_agent_watches_its_https_certificate_gateway_ca_and_broker_client_certificate(tmp_path: Path):
    """`watched_certificates`: the API's HTTPS certificate, `ROGATORY_GATEWAY_CA_FILE`, and each `amqps://` URL's
    `certfile` (once, whatever the number of nodes); none of them set, nothing."""
    https, ca, client = tmp_path / "api.pem", tmp_path / "network-ca.pem", tmp_path / "client.pem"
    query = f"cafile={tmp_path / 'broker-ca.pem'}&certfile={client}&keyfile={tmp_path / 'client-key.pem'}"
    urls = f"amqps://b1:5671/net?{query},amqps://b2:5671/net?{query}"
    settings = AgentSettings.model_validate(
        SETTINGS
        | {
            "amqp_url": urls,
            "http_tls_cert_file": https,
            "http_tls_key_file": tmp_path / "key.pem",
            "gateway_ca_file": ca,
        }
    )
    assert settings.watched_certificates == (https, ca, client)
    assert AgentSettings.model_validate(SETTINGS).watched_certificates == ()
