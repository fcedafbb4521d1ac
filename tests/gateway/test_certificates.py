"""Operators see when the deployment's TLS certificates expire: in the console's overview, its alerts and
`/metrics`, from files the gateway watches (by default those its broker URLs name)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

from gateway.console_api import ConsoleApi
from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings
from gateway.store import GatewayStore
from protocol.encoding import format_timestamp
from runtime.certificates import CertificateFacts, parse_pem_certificates, read_watched
from runtime.errors import UnreadableCertificate
from tests.support.certificates import pem_certificate
from tests.support.network import NOW, LocalNetwork

CA_NAME, BROKER_NAME = "Test broker CA", "localhost"


@pytest.fixture
def tls_dir(tmp_path: Path) -> Path:
    """A CA valid for a year, a broker certificate expiring in 5 days, and a file that is no certificate."""
    directory = tmp_path / "tls"
    directory.mkdir()
    (directory / "ca.pem").write_bytes(pem_certificate(CA_NAME, CA_NAME, NOW + timedelta(days=365)))
    (directory / "server.pem").write_bytes(pem_certificate(BROKER_NAME, CA_NAME, NOW + timedelta(days=5)))
    (directory / "broken.pem").write_bytes(
        b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n"
    )
    return directory


@pytest.fixture
async def store(tmp_path):
    opened = await GatewayStore.open(tmp_path / "gateway.db")
    try:
        yield opened
    finally:
        await opened.close()


def _console(store: GatewayStore, certificates: list[Path], metrics: GatewayMetrics | None = None) -> ConsoleApi:
    directory = LocalNetwork().directory()
    return ConsoleApi(
        store=store,
        tree_size=lambda: 0,
        directory=lambda: directory,
        health=lambda: {"status": "ok"},
        metrics=metrics or GatewayMetrics(),
        management=None,
        vhost="/",
        clock=lambda: NOW,
        certificates=certificates,
    )


def test_pem_certificates_are_read_as_subject_issuer_and_validity():
    """Every certificate of a PEM bundle is read: subject and issuer common names, and its validity."""
    until = NOW + timedelta(days=365)
    bundle = pem_certificate(BROKER_NAME, CA_NAME, NOW + timedelta(days=5)) + pem_certificate(CA_NAME, CA_NAME, until)
    first, second = parse_pem_certificates(bundle)
    assert first == CertificateFacts(
        subject=BROKER_NAME, issuer=CA_NAME, not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=5)
    )
    assert (second.subject, second.not_after) == (CA_NAME, until)


@pytest.mark.parametrize(
    "content",
    [b"", b"hello", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", b"\x30\x82\x01\x00"],
)
def test_a_file_that_holds_no_certificate_is_refused(content):
    """No PEM block, a PEM block that is not DER, or bare DER: refused with our error, not cryptography's."""
    with pytest.raises(UnreadableCertificate, match="expected one or more PEM certificates"):
        parse_pem_certificates(content)


def test_a_missing_or_unparsable_watched_file_is_kept_with_its_reason(tls_dir):
    """Watching never fails: a file that cannot be read or parsed is reported, the others still are."""
    watched = read_watched([tls_dir / "missing.pem", tls_dir / "broken.pem", tls_dir / "ca.pem"])
    assert [(w.path.name, w.facts is None) for w in watched] == [
        ("missing.pem", True),
        ("broken.pem", True),
        ("ca.pem", False),
    ]
    assert watched[0].problem == "cannot read the file: No such file or directory"
    assert watched[1].problem is not None
    assert "expected one or more PEM certificates" in watched[1].problem


async def _overview(console: ConsoleApi) -> dict[str, Any]:
    response = await console.overview(make_mocked_request("GET", "/v1/console/overview"))
    assert response.status == 200
    assert response.text is not None
    answer: dict[str, Any] = json.loads(response.text)
    return answer


async def test_overview_lists_certificates_and_alerts_on_expiry_and_unreadable_files(store, tls_dir):
    """The overview lists each watched certificate with its names, expiry and days left; one expiring within
    30 days raises `certificate_expiring`, an unparsable file `certificate_unreadable`, a valid one nothing."""
    paths = [tls_dir / "ca.pem", tls_dir / "server.pem", tls_dir / "broken.pem"]
    answer = await _overview(_console(store, paths))
    ca, server, broken = answer["certificates"]
    assert ca == {
        "path": str(tls_dir / "ca.pem"),
        "readable": True,
        "problem": None,
        "subject": CA_NAME,
        "issuer": CA_NAME,
        "not_after": format_timestamp(NOW + timedelta(days=365)),
        "expires_in_s": 365 * 86400.0,
        "days_left": 365,
        "expiring": False,
    }
    assert (server["subject"], server["issuer"], server["days_left"], server["expiring"]) == (
        BROKER_NAME,
        CA_NAME,
        5,
        True,
    )
    assert (broken["readable"], broken["subject"], broken["not_after"]) == (False, None, None)
    certificate_alerts = [a for a in answer["alerts"] if a["code"].startswith("certificate_")]
    assert [(a["code"], a["severity"]) for a in certificate_alerts] == [
        ("certificate_expiring", "warning"),
        ("certificate_unreadable", "warning"),
    ]
    assert certificate_alerts[0]["title"] == f"Certificate {BROKER_NAME} expires in 5 days"
    assert str(tls_dir / "server.pem") in certificate_alerts[0]["detail"]
    assert str(tls_dir / "broken.pem") in certificate_alerts[1]["detail"]


async def test_an_expired_certificate_is_a_critical_alert(store, tmp_path):
    """A watched certificate past its end is critical, and says when it expired."""
    expired = tmp_path / "expired.pem"
    expired.write_bytes(pem_certificate("old-client", CA_NAME, NOW - timedelta(days=2), NOW - timedelta(days=400)))
    answer = await _overview(_console(store, [expired]))
    assert answer["certificates"][0]["days_left"] == -2
    alert = next(a for a in answer["alerts"] if a["code"] == "certificate_expiring")
    assert alert["severity"] == "critical"
    assert alert["title"] == f"Certificate old-client expired {format_timestamp(NOW - timedelta(days=2))[:10]}"
    assert answer["alerts"][0]["severity"] == "critical", "critical alerts come first"


async def test_metrics_export_each_certificate_expiry_and_whether_it_could_be_read(store, tls_dir):
    """`/metrics` has the end of validity of each watched certificate (Unix time) by path, subject and
    issuer, and 0 for a file that cannot be parsed, for the sample alert rules to read."""
    paths = [tls_dir / "ca.pem", tls_dir / "server.pem", tls_dir / "broken.pem"]
    metrics = GatewayMetrics()
    response = await _console(store, paths, metrics).metrics(make_mocked_request("GET", "/metrics"))
    assert response.text is not None
    assert "rogatory_certificate_expiry_timestamp_seconds{" in response.text
    value = metrics.registry.get_sample_value
    server = {"path": str(tls_dir / "server.pem"), "subject": BROKER_NAME, "issuer": CA_NAME}
    ca = {"path": str(tls_dir / "ca.pem"), "subject": CA_NAME, "issuer": CA_NAME}
    assert value("rogatory_certificate_expiry_timestamp_seconds", server) == (NOW + timedelta(days=5)).timestamp()
    assert value("rogatory_certificate_expiry_timestamp_seconds", ca) == (NOW + timedelta(days=365)).timestamp()
    assert value("rogatory_certificate_readable", {"path": str(tls_dir / "ca.pem")}) == 1
    assert value("rogatory_certificate_readable", {"path": str(tls_dir / "broken.pem")}) == 0


def _environ(amqp_url: str, **extra: str) -> dict[str, str]:
    base = "/srv/rogatory"  # never read: settings only parse
    token = "0" * 64
    return {
        "ROGATORY_AMQP_URL": amqp_url,
        "ROGATORY_DATA_DIR": base,
        "ROGATORY_DIRECTORY_FILE": f"{base}/directory.json",
        "ROGATORY_AUTHORITY_KEY": "k",
        "ROGATORY_KEYSTORE_FILE": f"{base}/keystore.json",
        "ROGATORY_KEYSTORE_PASSPHRASE_FILE": f"{base}/passphrase",
        "ROGATORY_OPERATOR_TOKEN_SHA256": token,
        "ROGATORY_AUDITOR_TOKEN_SHA256": token,
    } | {f"ROGATORY_{name.upper()}": value for name, value in extra.items()}


def test_by_default_the_gateway_watches_the_certificates_its_broker_urls_use(tls_dir, tmp_path):
    """Unset, the watched files are each amqps URL's `cafile` (and `certfile`), plus the broker certificate
    beside the CA where there is one; plain AMQP watches nothing; an explicit list, even empty, wins."""
    ca = tls_dir / "ca.pem"
    urls = f"amqps://gw:pw@localhost:5671/net?cafile={ca},amqps://gw:pw@localhost:5672/net?cafile={ca}"
    settings = GatewaySettings.from_environ(_environ(urls))
    assert settings.watched_certificates == (ca, tls_dir / "server.pem")

    elsewhere = tmp_path / "elsewhere-ca.pem"
    client = tmp_path / "client.pem"
    url = f"amqps://gw:pw@broker.example:5671/net?cafile={elsewhere}&certfile={client}&keyfile={tmp_path}/k.pem"
    assert GatewaySettings.from_environ(_environ(url)).watched_certificates == (elsewhere, client)

    assert GatewaySettings.from_environ(_environ("amqp://gw:pw@127.0.0.1:5672/net")).watched_certificates == ()
    chosen = _environ(urls, watched_certificates=f" {client} ,{ca}")
    assert GatewaySettings.from_environ(chosen).watched_certificates == (client, ca)
    assert GatewaySettings.from_environ(_environ(urls, watched_certificates="")).watched_certificates == ()
