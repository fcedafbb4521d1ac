"""HTTPS wherever traffic leaves a site: the gateway's listener, the agent's client to it, the clear-text rule.

The gateway's real application is served by the services' runner
(`runtime.runner.run_service`) with a certificate issued by a network CA
(`deploy.provision.tls`), on loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import ssl
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from cryptography import x509
from cryptography.x509.oid import NameOID
from structlog.testing import capture_logs

from agents.auditing import GatewayAuditClient, GatewayUnreachable
from agents.settings import AgentSettings
from deploy.cli import main
from deploy.provision.tls import IssuedFiles, ensure_ca, issue_server_files
from gateway.api import GatewayApi, Role, TokenTable
from gateway.console_api import ConsoleApi
from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings
from gateway.store import GatewayStore
from runtime.errors import ConfigurationError
from runtime.runner import Service, run_service
from runtime.settings import ServiceSettings
from runtime.tls import client_context, listener_context
from tests.gateway.conftest import Harness, harness  # noqa: F401 - the gateway's in-process harness
from tests.support.network import NOW, LocalNetwork

READER_TOKEN = "reader-token-for-the-https-test"
COMMON: dict[str, Any] = {
    "amqp_url": "amqp://u:p@127.0.0.1:5672/net",
    "data_dir": "/srv/rogatory",
    "directory_file": "/srv/rogatory/directory.json",
    "authority_key": "k",
    "keystore_file": "/srv/rogatory/keystore.json",
    "keystore_passphrase_file": "/srv/rogatory/passphrase",
}


@pytest.fixture
async def gateway_store(tmp_path: Path) -> AsyncIterator[GatewayStore]:
    """SQLite is enough here: what is under test is the transport."""
    store = await GatewayStore.open(tmp_path / "gateway.db")
    yield store
    await store.close()


@pytest.fixture
def network_ca(tmp_path: Path) -> Path:
    """The network's CA directory (`rogatory tls ca`)."""
    ensure_ca(tmp_path / "ca", "Test network CA")
    return tmp_path / "ca"


@pytest.fixture
def gateway_certificate(network_ca: Path, tmp_path: Path) -> IssuedFiles:
    """The gateway's HTTPS certificate for `localhost` and 127.0.0.1 (`rogatory tls server-cert`)."""
    return issue_server_files(network_ca, "localhost", tmp_path / "gateway-tls", also=("127.0.0.1",))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _settings(**values: Any) -> ServiceSettings:
    return ServiceSettings.model_validate(COMMON | values)


async def _idle(stopping: asyncio.Event) -> None:
    await stopping.wait()


@contextlib.asynccontextmanager
async def serving(app: web.Application, settings: ServiceSettings) -> AsyncIterator[None]:
    """Run `app` under the services' runner until the block ends."""
    stopping = asyncio.Event()
    task = asyncio.create_task(run_service(Service("gateway", settings, app, {"idle": _idle}, ()), stopping))
    for _ in range(100):
        if task.done():
            await task  # raises why it could not start
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", settings.http_port)
            writer.close()
            break
        await asyncio.sleep(0.05)
    try:
        yield
    finally:
        stopping.set()
        await task


@pytest.fixture
async def https_gateway(harness: Harness, gateway_certificate: IssuedFiles) -> AsyncIterator[str]:  # noqa: F811
    """The gateway's API (audit, proofs) over HTTPS on 127.0.0.1, with a signed checkpoint; its base URL."""
    assert await harness.audit.checkpoint_if_due(NOW, idle_interval=timedelta(hours=1)) is not None
    api = GatewayApi(
        store=harness.store,
        audit=harness.audit,
        tokens=TokenTable(((hashlib.sha256(READER_TOKEN.encode()).hexdigest(), Role.READER),)),
        health=lambda: {"status": "ok"},
        directory=harness.net.directory,
        clock=lambda: NOW,
        authority=harness.net.authority.public_key,
    )
    port = _free_port()
    settings = _settings(
        http_port=port,
        http_tls_cert_file=gateway_certificate.certificate,
        http_tls_key_file=gateway_certificate.key,
    )
    async with serving(api.app(), settings):
        yield f"https://localhost:{port}"


async def test_a_client_that_does_not_trust_the_network_ca_cannot_talk_to_the_gateway(https_gateway: str):
    """A client trusting only the system's store, or another CA, has its TLS handshake refused."""
    other_ca = ssl.create_default_context()  # the system's store: the network CA is not in it
    for trust in (True, other_ca):
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trust)) as session:
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await session.get(f"{https_gateway}/healthz")
    async with aiohttp.ClientSession() as session:
        client = GatewayAuditClient(session, https_gateway, READER_TOKEN)
        with pytest.raises(GatewayUnreachable):
            await client.inclusion_proofs(["x"], 1)


async def test_clear_text_to_the_https_listener_gets_no_answer(https_gateway: str):
    """Plain HTTP to the HTTPS port is not served: nothing travels in clear text."""
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError):
            await session.get(https_gateway.replace("https://", "http://") + "/healthz")


async def test_an_agent_configured_with_the_network_ca_talks_to_the_gateway_over_https(
    https_gateway: str, network_ca: Path
):
    """With `ROGATORY_GATEWAY_CA_FILE` the agent verifies the gateway and fetches checkpoints and proofs."""
    settings = AgentSettings.model_validate(
        COMMON
        | {
            "agency": "BD-MOHA-PSD",
            "api_tokens_sha256": ("0" * 64,),
            "gateway_broker_user": "gateway",
            "gateway_url": https_gateway,
            "gateway_ca_file": network_ca / "ca.pem",
        }
    )
    connector = aiohttp.TCPConnector(ssl=client_context(settings.gateway_ca_file))
    async with aiohttp.ClientSession(connector=connector) as session:
        client = GatewayAuditClient(session, https_gateway, READER_TOKEN)
        checkpoint = await client.latest_checkpoint()
        assert await client.inclusion_proofs(["not-logged"], 1) == {}
    assert checkpoint["tree_size"] == 1


async def test_the_gateway_refuses_to_listen_in_clear_text_on_a_non_loopback_address(tmp_path: Path):
    """Without a certificate, a listener on a non-loopback address does not start: `ConfigurationError`."""
    for host in ("0.0.0.0", "", "192.0.2.10", "gateway.example"):  # noqa: S104 - the address under test
        with pytest.raises(ConfigurationError, match="refusing to serve clear-text HTTP"):
            listener_context(_settings(http_host=host, http_port=0))
    with pytest.raises(ConfigurationError, match="refusing to serve clear-text HTTP"):
        async with serving(web.Application(), _settings(http_host="0.0.0.0", http_port=_free_port())):  # noqa: S104
            pytest.fail("the runner served clear text on every address")


def test_clear_text_beyond_loopback_needs_the_unsafe_flag_and_warns():
    """`ROGATORY_UNSAFE_PLAIN_HTTP=1` allows it (behind a TLS proxy) and says so; loopback needs no flag."""
    assert listener_context(_settings(http_host="127.0.0.1", http_port=0)) is None
    assert listener_context(_settings(http_host="::1", http_port=0)) is None
    settings = ServiceSettings.from_environ(
        {f"ROGATORY_{name.upper()}": str(value) for name, value in COMMON.items()}
        | {"ROGATORY_HTTP_HOST": "0.0.0.0", "ROGATORY_HTTP_PORT": "0", "ROGATORY_UNSAFE_PLAIN_HTTP": "1"}  # noqa: S104
    )
    with capture_logs() as logs:
        assert listener_context(settings) is None
    assert [entry["event"] for entry in logs] == ["plain_http_unsafe"]
    assert logs[0]["log_level"] == "warning"


def test_a_certificate_without_its_key_is_refused(gateway_certificate: IssuedFiles):
    """The HTTP certificate and its key are given together, or the settings are invalid."""
    with pytest.raises(ConfigurationError, match="HTTP_TLS_KEY_FILE"):
        ServiceSettings.from_environ(
            {f"ROGATORY_{name.upper()}": str(value) for name, value in COMMON.items()}
            | {"ROGATORY_HTTP_PORT": "0", "ROGATORY_HTTP_TLS_CERT_FILE": str(gateway_certificate.certificate)}
        )


def test_an_agent_refuses_a_clear_text_gateway_beyond_loopback():
    """`ROGATORY_GATEWAY_URL=http://` names a loopback gateway, or the agent does not start."""
    agent = COMMON | {"agency": "BD-MOHA-PSD", "api_tokens_sha256": ("0" * 64,), "gateway_broker_user": "gateway"}
    with pytest.raises(ValueError, match="an http:// gateway must be on a loopback address"):
        AgentSettings.model_validate(agent | {"gateway_url": "http://gateway.example:8700"})
    assert AgentSettings.model_validate(agent | {"gateway_url": "https://gateway.example:8700"})
    assert AgentSettings.model_validate(agent | {"gateway_url": "http://127.0.0.1:8700"})


async def test_the_gateway_http_certificate_expiry_appears_in_its_metrics(
    gateway_certificate: IssuedFiles, gateway_store: GatewayStore
):
    """Unless told otherwise, the gateway's `/metrics` has its own HTTPS certificate's end of validity."""
    settings = GatewaySettings.model_validate(
        COMMON
        | {
            "operator_token_sha256": "0" * 64,
            "auditor_token_sha256": "0" * 64,
            "http_tls_cert_file": str(gateway_certificate.certificate),
            "http_tls_key_file": str(gateway_certificate.key),
        }
    )
    assert settings.watched_certificates == (gateway_certificate.certificate,)
    metrics = GatewayMetrics()
    console = ConsoleApi(
        store=gateway_store,
        tree_size=lambda: 0,
        directory=LocalNetwork().directory,
        health=lambda: {"status": "ok"},
        metrics=metrics,
        management=None,
        vhost="/",
        clock=lambda: NOW,
        certificates=settings.watched_certificates,
    )
    await console.metrics(make_mocked_request("GET", "/metrics"))
    issued = x509.load_pem_x509_certificate(gateway_certificate.certificate.read_bytes())
    labels = {"path": str(gateway_certificate.certificate), "subject": "localhost", "issuer": "Test network CA"}
    expiry = metrics.registry.get_sample_value("rogatory_certificate_expiry_timestamp_seconds", labels)
    assert expiry == issued.not_valid_after_utc.timestamp()


def test_the_tls_commands_issue_server_and_agency_client_certificates_from_the_network_ca(tmp_path: Path):
    """`rogatory tls ca / server-cert / client-cert`: leaves chain to the CA, names as asked, keys private."""
    ca_dir, out = tmp_path / "ca", tmp_path / "out"
    assert main(["tls", "ca", "--ca-dir", str(ca_dir)]) == 0
    ca_pem = (ca_dir / "ca.pem").read_bytes()
    assert main(["tls", "ca", "--ca-dir", str(ca_dir)]) == 0
    assert (ca_dir / "ca.pem").read_bytes() == ca_pem, "an existing CA is kept"
    server_args = ["--name", "gateway.example", "--also", "192.0.2.7", "--ca-dir", str(ca_dir), "--out-dir", str(out)]
    assert main(["tls", "server-cert", *server_args]) == 0
    client_args = ["--agency", "BD-MOHA-PSD", "--user-prefix", "net1.", "--ca-dir", str(ca_dir), "--out-dir", str(out)]
    assert main(["tls", "client-cert", *client_args]) == 0
    ca = x509.load_pem_x509_certificate(ca_pem)
    server = x509.load_pem_x509_certificate((out / "gateway.example.pem").read_bytes())
    client = x509.load_pem_x509_certificate((out / "client.pem").read_bytes())
    for leaf in (server, client):
        leaf.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["gateway.example"]
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["192.0.2.7"]
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "net1.BD-MOHA-PSD"
    for key in (out / "gateway.example-key.pem", out / "client-key.pem", ca_dir / "ca-key.pem"):
        assert key.stat().st_mode & 0o077 == 0, f"{key} is readable by others"
    assert main(["tls", "server-cert", "--name", "x", "--ca-dir", str(tmp_path / "none"), "--out-dir", str(out)]) == 1
