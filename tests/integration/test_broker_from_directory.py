"""`rogatory broker provision` against the real broker: from a verified directory, idempotent, revoking.

The network is made by the site commands (`tests/site/conftest.py`); each test
provisions it under a vhost and user prefix of its own, and deletes them after.
"""

from __future__ import annotations

import asyncio
import json
import secrets

import aio_pika
import pytest
from aio_pika.exceptions import AMQPConnectionError

from deploy.cli.commands import main
from deploy.provision.broker import DEFAULT_MAX_QUEUE_BYTES, OPERATOR_POLICY_NAME, NetworkPlan, delete_network
from protocol.ids import AgencyId
from protocol.topology import INGRESS_QUEUE, inbox_queue
from tests.integration.test_broker_provisioning import _snapshot
from tests.site.conftest import make_sites

pytestmark = pytest.mark.broker

BD, LY = "BD-MOHA-PSD", "LY-MLA-CA"


@pytest.fixture
def hub(tmp_path, broker_settings):
    """The sites, and the arguments of `broker provision` on a vhost of this test; everything deleted after."""
    sites = make_sites(tmp_path)
    token = secrets.token_hex(4)
    prefix = f"rogatory-test-{token}."
    vhost = f"rogatory-test-{token}"
    admin_password = tmp_path / "admin-password"
    admin_password.write_text(broker_settings.admin_password)
    authority_key = json.loads((sites.authority / "authority.json").read_text())["authority_key"]
    argv = [
        "broker", "provision", "--directory", str(sites.directory), "--authority-key", authority_key,
        "--management-url", broker_settings.management_url, "--admin", broker_settings.admin_user,
        "--admin-password-file", str(admin_password), "--vhost", vhost, "--user-prefix", prefix,
        "--secrets", str(tmp_path / "hub" / "broker-secrets"),
    ]  # fmt: skip
    plan = NetworkPlan(
        vhost=vhost,
        gateway_user=f"{prefix}gateway",
        agency_users={AgencyId(BD): f"{prefix}{BD}", AgencyId(LY): f"{prefix}{LY}"},
    )
    yield sites, argv, plan, tmp_path / "hub" / "broker-secrets"

    async def clean() -> None:
        async with broker_settings.management_client() as admin:
            await delete_network(admin, plan)

    asyncio.run(clean())


async def _connect(broker_settings, plan, user, password):
    return await aio_pika.connect(
        host=broker_settings.amqp_host,
        port=broker_settings.amqp_port,
        login=user,
        password=password,
        virtualhost=plan.vhost,
        timeout=5,
    )


def test_provisioning_from_the_signed_directory_is_idempotent(hub, broker_settings):
    """Users, permissions and queues come from the verified directory; a second run changes nothing."""
    _sites, argv, plan, secrets_dir = hub
    assert main(argv) == 0

    async def snapshot():
        async with broker_settings.management_client() as admin:
            return await _snapshot(admin, plan)

    first = asyncio.run(snapshot())
    names = {queue["name"] for queue in first["queues"]}
    assert {INGRESS_QUEUE, inbox_queue(AgencyId(BD)), inbox_queue(AgencyId(LY))} <= names
    assert set(first["users"]) == set(plan.users)
    passwords = {path.name: path.read_text() for path in secrets_dir.iterdir()}
    assert set(passwords) == {f"{user}.password" for user in plan.users}
    assert all((secrets_dir / name).stat().st_mode & 0o077 == 0 for name in passwords)
    [policy] = first["operator_policies"]
    assert policy["definition"]["max-length-bytes"] == DEFAULT_MAX_QUEUE_BYTES

    assert main(argv) == 0
    assert asyncio.run(snapshot()) == first
    assert {path.name: path.read_text() for path in secrets_dir.iterdir()} == passwords

    async def login() -> None:
        user = plan.agency_users[AgencyId(BD)]
        connection = await _connect(broker_settings, plan, user, passwords[f"{user}.password"])
        await connection.close()

    asyncio.run(login())


def test_max_queue_bytes_option_sets_the_operator_policy(hub, broker_settings):
    """`--max-queue-bytes` is the byte limit of the network's operator policy."""
    _sites, argv, plan, _ = hub
    assert main([*argv, "--max-queue-bytes", str(64 * 1024**2)]) == 0

    async def policy():
        async with broker_settings.management_client() as admin:
            return await admin.get_json(("operator-policies", plan.vhost, OPERATOR_POLICY_NAME), action="read policy")

    assert asyncio.run(policy())["definition"]["max-length-bytes"] == 64 * 1024**2
    assert main([*argv, "--max-queue-bytes", "0"]) == 1


def test_a_directory_signed_by_another_authority_provisions_nothing(hub, broker_settings):
    """The directory is verified against the key the operator gives: another key, and the broker is untouched."""
    _sites, argv, plan, _ = hub
    forged = argv.copy()
    forged[forged.index("--authority-key") + 1] = "A" * 43 + "="
    assert main(forged) == 1

    async def vhost():
        async with broker_settings.management_client() as admin:
            return await admin.get_json(("vhosts", plan.vhost), action="read vhost", missing_ok=True)

    assert asyncio.run(vhost()) is None


def test_an_agency_removed_in_a_newer_version_loses_its_broker_access(hub, broker_settings):
    """Provisioning a version without LY-MLA-CA deletes its user and closes its connection; it cannot log in again."""
    sites, argv, plan, secrets_dir = hub
    assert main(argv) == 0
    user = plan.agency_users[AgencyId(LY)]
    password = (secrets_dir / f"{user}.password").read_text()

    async def scenario() -> None:
        connection = await _connect(broker_settings, plan, user, password)
        closed = asyncio.Event()
        connection.close_callbacks.add(lambda *_: closed.set())
        assert main(["authority", "remove-agency", LY, "--dir", str(sites.authority)]) == 0
        assert sites.sign() == 0
        assert await asyncio.to_thread(main, argv) == 0
        await asyncio.wait_for(closed.wait(), 10)
        with pytest.raises(AMQPConnectionError):
            await _connect(broker_settings, plan, user, password)
        still = plan.agency_users[AgencyId(BD)]
        kept = await _connect(broker_settings, plan, still, (secrets_dir / f"{still}.password").read_text())
        await kept.close()

    asyncio.run(scenario())
    assert not (secrets_dir / f"{user}.password").exists()
