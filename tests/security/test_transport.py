"""Transport: AMQPS with the dev stack's own CA, the broker's host name verified, isolation unchanged over TLS."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import os
import socket
import ssl
import stat
import subprocess
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import pytest
from aiormq.exceptions import AMQPConnectionError, ChannelAccessRefused

from deploy.configuration import system_management_url
from deploy.provision.tls import (
    CONF_BEGIN,
    DEFAULT_TLS_DIR,
    TLS_PORT,
    BrokerTlsFiles,
    TlsError,
    ensure_broker_tls,
    machine_broker_tls,
    make_ca,
    merge_rabbitmq_conf,
    rabbitmq_conf_block,
    service_amqp_url,
    tls_amqp_url,
)
from protocol.ids import AgencyId
from protocol.topology import inbox_queue
from tests.security.conftest import BD, LY
from tests.support.amqp import refused_connection

ROOT = Path(__file__).resolve().parents[2]
MACHINE_CA = BrokerTlsFiles(Path(os.environ.get("ROGATORY_BROKER_TLS_DIR") or DEFAULT_TLS_DIR)).ca_cert
ADMIN_URL = "amqp://guest:guest@127.0.0.1:5672/"


# -- the CA and certificates ---------------------------------------------------------


def test_broker_tls_material_is_made_once_with_private_keys_private(tmp_path: Path) -> None:
    """A CA and a `localhost` certificate are made; keys are 0600/0640; a second run changes nothing."""
    files = BrokerTlsFiles(tmp_path / "tls")
    assert ensure_broker_tls(files.directory) is True
    assert stat.S_IMODE(files.ca_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(files.server_key.stat().st_mode) == 0o640
    assert stat.S_IMODE(files.ca_cert.stat().st_mode) == 0o644
    before = {path: path.read_bytes() for path in files.directory.iterdir()}
    assert ensure_broker_tls(files.directory) is False
    assert {path: path.read_bytes() for path in files.directory.iterdir()} == before


def test_a_server_certificate_not_issued_by_the_ca_beside_it_is_issued_again(tmp_path: Path) -> None:
    """A certificate swapped in from another CA (or tampered) is replaced by one the CA issued."""
    files = BrokerTlsFiles(tmp_path / "tls")
    ensure_broker_tls(files.directory)
    other = BrokerTlsFiles(tmp_path / "other")
    ensure_broker_tls(other.directory)
    files.server_cert.write_bytes(other.server_cert.read_bytes())
    assert ensure_broker_tls(files.directory) is True
    context = ssl.create_default_context(cafile=str(files.ca_cert))
    context.load_cert_chain(files.server_cert, files.server_key)  # the key matches the new certificate


def test_a_certificate_near_expiry_is_renewed(tmp_path: Path) -> None:
    """Run again within the renewal window, the broker's certificate is issued anew."""
    files = BrokerTlsFiles(tmp_path / "tls")
    ensure_broker_tls(files.directory)
    first = files.server_cert.read_bytes()
    assert ensure_broker_tls(files.directory, now=dt.datetime.now(dt.UTC) + dt.timedelta(days=820)) is True
    assert files.server_cert.read_bytes() != first


def test_rabbitmq_conf_keeps_every_other_line_and_is_written_once(tmp_path: Path) -> None:
    """Our block goes between markers; the operator's lines stay; merging twice is merging once."""
    block = rabbitmq_conf_block(BrokerTlsFiles(tmp_path))
    existing = "listeners.tcp.local = 127.0.0.1:5672\nlog.console = true\n"
    merged = merge_rabbitmq_conf(existing, block)
    assert merged.startswith(existing)
    assert f"listeners.ssl.default = 127.0.0.1:{TLS_PORT}" in merged
    assert merge_rabbitmq_conf(merged, block) == merged
    moved = merge_rabbitmq_conf(merged, rabbitmq_conf_block(BrokerTlsFiles(tmp_path / "new")))
    assert moved.count(CONF_BEGIN) == 1
    assert str(tmp_path / "new" / "ca.pem") in moved
    assert "log.console = true" in moved


def test_services_use_tls_for_the_machine_broker_only(tmp_path: Path) -> None:
    """The machine's broker (loopback:5672) becomes amqps://localhost:5671 with the CA; other nodes stay."""
    converted = service_amqp_url("amqp://u%40x:p%2Fw@127.0.0.1:5672/vh,amqp://u%40x:p%2Fw@127.0.0.1:40001/vh", tmp_path)
    first, second = converted.split(",")
    assert first == f"amqps://u%40x:p%2Fw@localhost:5671/vh?cafile={str(tmp_path / 'ca.pem').replace('/', '%2F')}"
    assert second == "amqp://u%40x:p%2Fw@127.0.0.1:40001/vh"
    assert service_amqp_url("amqp://u:p@127.0.0.1:5672/vh", None) == "amqp://u:p@127.0.0.1:5672/vh"


def test_plain_amqp_must_be_asked_for_by_its_unsafe_name(tmp_path: Path) -> None:
    """Without the CA the dev stack refuses to start; only ROGATORY_UNSAFE_PLAIN_AMQP=1 runs it in the clear."""
    with pytest.raises(TlsError, match="ROGATORY_UNSAFE_PLAIN_AMQP"):
        machine_broker_tls({"ROGATORY_BROKER_TLS_DIR": str(tmp_path)})
    assert machine_broker_tls({"ROGATORY_UNSAFE_PLAIN_AMQP": "1"}) is None
    ensure_broker_tls(tmp_path)
    assert machine_broker_tls({"ROGATORY_BROKER_TLS_DIR": str(tmp_path)}) == tmp_path


# -- the machine's broker ------------------------------------------------------------------


async def test_broker_answers_amqps_verified_against_the_dev_ca() -> None:
    """A client that verifies chain and host name against the dev CA connects to the broker's TLS port."""
    connection = await aio_pika.connect(tls_amqp_url(ADMIN_URL, MACHINE_CA), timeout=15)
    try:
        channel = await connection.channel()
        assert not channel.is_closed
    finally:
        await connection.close()


async def test_a_client_with_another_ca_refuses_the_broker(tmp_path: Path) -> None:
    """A broker certificate the client's CA did not issue fails the handshake (no man in the middle)."""
    certificate, _ = make_ca("someone else")
    other_ca = tmp_path / "other-ca.pem"
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    other_ca.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    refusal = await refused_connection(tls_amqp_url(ADMIN_URL, other_ca), timeout=15)
    assert isinstance(refusal, AMQPConnectionError), repr(refusal)
    assert "CERTIFICATE_VERIFY_FAILED" in str(refusal)


def test_the_broker_is_refused_under_any_other_host_name() -> None:
    """Host-name verification is on: the broker's certificate does not pass for another name."""
    context = ssl.create_default_context(cafile=str(MACHINE_CA))
    with (
        socket.create_connection(("127.0.0.1", TLS_PORT), timeout=10) as raw,
        pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"),
    ):
        context.wrap_socket(raw, server_hostname="broker.example.org")


async def test_plain_amqp_is_not_spoken_on_the_tls_port() -> None:
    """The TLS port speaks nothing in the clear."""
    refusal = await refused_connection(f"amqp://guest:guest@127.0.0.1:{TLS_PORT}/", timeout=5)
    assert isinstance(refusal, AMQPConnectionError | ConnectionError | asyncio.TimeoutError), repr(refusal)


def test_ensure_rabbitmq_is_idempotent_and_keeps_tls_on() -> None:
    """Run again on a running broker, the set-up script changes nothing, restarts nothing, and AMQPS answers."""
    result = subprocess.run(
        ["/bin/bash", str(ROOT / "deploy" / "ensure-rabbitmq.sh")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert ": unchanged" in result.stdout
    assert "AMQPS listener answers on port 5671" in result.stdout
    assert "starting it" not in result.stdout


# -- the dev stack over TLS ------------------------------------------------------------------


async def test_every_service_of_the_dev_stack_talks_to_the_broker_over_tls(security_stack: dict[str, Any]) -> None:
    """stack.json gives amqps URLs, and the broker sees every connection of the network's vhost as TLS."""
    vhost = security_stack["network"]["vhost"]
    assert all(entry["amqp_url"].startswith("amqps://") for entry in security_stack["agents"].values())
    management = system_management_url(os.environ) or "http://127.0.0.1:15672"
    headers = {"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode("ascii")}
    async with aiohttp.ClientSession(headers=headers) as session:
        for _ in range(100):
            async with session.get(f"{management}/api/connections") as got:
                connections = [c for c in await got.json() if c.get("vhost") == vhost]
            users = {c["user"] for c in connections}
            if len(users) >= 1 + len(security_stack["agents"]):
                break
            await asyncio.sleep(0.3)
    assert len(users) >= 1 + len(security_stack["agents"]), users
    assert all(connection["ssl"] is True for connection in connections), [c["name"] for c in connections]


async def test_an_agency_over_tls_still_cannot_read_another_agencys_inbox(security_stack: dict[str, Any]) -> None:
    """Isolation does not depend on the transport: BD's own credentials over TLS are refused LY's inbox."""
    connection = await aio_pika.connect(security_stack["agents"][BD]["amqp_url"], timeout=15)
    try:
        channel = await connection.channel()
        queue = await channel.get_queue(inbox_queue(AgencyId(LY)), ensure=False)
        with pytest.raises(ChannelAccessRefused):
            await queue.get(timeout=5, fail=False)
    finally:
        await connection.close()
