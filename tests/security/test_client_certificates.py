"""Client certificates as the broker login (EXTERNAL), on a private RabbitMQ node configured by `deploy.provision.tls`.

The machine's broker is shared and keeps passwords; this private node shows
the option end to end: a certificate our CA issued for a broker user logs in
as that user with no password; a certificate of another CA, or none, does not.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aio_pika
import pytest
from aiormq.exceptions import AMQPConnectionError

from deploy.provision.tls import BrokerTlsFiles, ensure_broker_tls, issue_client_certificate, rabbitmq_conf_block
from tests.support.amqp import refused_connection
from tests.support.rabbitnode import RabbitNode, free_port

pytestmark = [pytest.mark.broker]
USER = "net.BD-MOHA-PSD"


@pytest.fixture(scope="module")
def external_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RabbitNode, BrokerTlsFiles, int]]:
    """A private node with an AMQPS listener that verifies client certificates and offers EXTERNAL."""
    base = tmp_path_factory.mktemp("external")
    files = BrokerTlsFiles(base / "tls")
    ensure_broker_tls(files.directory)
    tls_port = free_port()
    node = RabbitNode.create(base, "rogatory-external")
    node.extra_plugins = ("rabbitmq_auth_mechanism_ssl",)
    # Exactly the block `ensure-rabbitmq.sh` writes (so a fresh broker is shown to boot with it), plus EXTERNAL.
    node.extra_config = (
        *rabbitmq_conf_block(files, port=tls_port),
        "ssl_cert_login_from = common_name",
        "auth_mechanisms.1 = EXTERNAL",
        "auth_mechanisms.2 = PLAIN",
    )
    node.start()
    try:
        node.wait_ready()
        node.ctl("add_user", USER, "an-unused-password-0")
        node.ctl("clear_password", USER)
        node.ctl("set_permissions", "-p", "/", USER, "^$", "^$", "^$")
        yield node, files, tls_port
    finally:
        node.kill()


def external_url(files: BrokerTlsFiles, port: int, cert: Path | None = None, key: Path | None = None) -> str:
    client = f"&certfile={cert}&keyfile={key}" if cert and key else ""
    return f"amqps://localhost:{port}/?cafile={files.ca_cert}{client}&auth=external"


async def test_a_certificate_issued_for_a_broker_user_logs_in_as_that_user_without_a_password(
    external_node: tuple[RabbitNode, BrokerTlsFiles, int], tmp_path: Path
) -> None:
    """EXTERNAL: the certificate's common name is the broker user; no password travels."""
    node, files, port = external_node
    cert, key = issue_client_certificate(files.directory, USER, tmp_path)
    connection = await aio_pika.connect(external_url(files, port, cert, key), timeout=20)
    try:
        await connection.channel()
        listed = node.ctl("list_connections", "user", "auth_mechanism", "ssl").stdout
        assert f"{USER}\tEXTERNAL\ttrue" in listed
    finally:
        await connection.close()


async def test_a_certificate_of_another_ca_is_refused(
    external_node: tuple[RabbitNode, BrokerTlsFiles, int], tmp_path: Path
) -> None:
    """A client certificate the broker's CA did not issue fails the TLS handshake."""
    _, files, port = external_node
    other = BrokerTlsFiles(tmp_path / "other")
    ensure_broker_tls(other.directory)
    cert, key = issue_client_certificate(other.directory, USER, tmp_path / "client")
    refusal = await refused_connection(external_url(files, port, cert, key), timeout=20)
    assert isinstance(refusal, AMQPConnectionError | ConnectionError), repr(refusal)


async def test_external_login_without_a_certificate_is_refused(
    external_node: tuple[RabbitNode, BrokerTlsFiles, int],
) -> None:
    """No certificate, no EXTERNAL login."""
    _, files, port = external_node
    refusal = await refused_connection(external_url(files, port), timeout=20)
    assert isinstance(refusal, AMQPConnectionError | ConnectionError), repr(refusal)
