"""The directory in force, without a restart: newer versions take effect, rollbacks are refused, expiry is enforced.

Each test runs the real `runtime.directory.DirectoryWatch` task, as both
services wire it, over the real gateway pipeline (on its real store and
audit log) or the real agent receiver and API, writing directory files as an
authority would.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from agents.held_directory import HELD_FILE, remember_directory
from agents.receiving import InboxDelivery
from gateway.auditlog import AuditLog
from gateway.directory import DirectoryHolder
from gateway.pipeline import GatewayIdentity, IngressDelivery, IngressPipeline
from gateway.store import GatewayStore
from protocol.directory import AgencyEntry, Directory, PublishedSigningKey, sign_directory
from protocol.envelope import Recipient, seal
from protocol.errors import ErrorCode
from protocol.ids import CaseId, MessageId
from protocol.signing import SignedStatement
from protocol.topology import KIND_SEALED_MESSAGE
from runtime.directory import DirectoryWatch
from runtime.errors import DirectoryExpired
from tests.agents.harness import GATEWAY_USER, start_agent
from tests.gateway.conftest import PREFIX, InMemoryBroker
from tests.security.attacks import valid_document
from tests.support.network import BD, LY, NOW, LocalNetwork, published

INTERVAL_S = 0.1
"""The reload interval of these tests (`ROGATORY_DIRECTORY_RELOAD_S`); the bound waited for is a few of them."""
BOUND_S = 2.0


def write(path: Path, signed: SignedStatement) -> Path:
    """Write a directory file as an operator would: whole, at once."""
    temporary = path.with_suffix(".tmp")
    temporary.write_bytes(signed.model_dump_json().encode("utf-8"))
    temporary.replace(path)
    return path


def revoking_bd(net: LocalNetwork, version: int) -> Directory:
    """Version `version` of the directory: BD's signing key revoked an hour before NOW."""
    directory = net.directory(version=version)
    entries = []
    for entry in directory.agencies:
        if entry.agency_id == BD:
            revoked = PublishedSigningKey.model_validate(
                published(net[BD].signing, revoked_at=NOW - timedelta(hours=1))
            )
            entry = AgencyEntry.model_validate(entry.model_dump() | {"signing_keys": (revoked,)})  # noqa: PLW2901
        entries.append(entry)
    return directory.model_copy(update={"agencies": tuple(entries)})


@contextlib.asynccontextmanager
async def watching(watch: DirectoryWatch) -> AsyncIterator[None]:
    """The watch's task running beside the test, as the service runner runs it."""
    stopping = asyncio.Event()
    task = asyncio.create_task(watch.run(stopping))
    try:
        yield
    finally:
        stopping.set()
        await task


async def within_bound(condition: Callable[[], bool]) -> None:
    """Wait until `condition` holds, failing after `BOUND_S`."""
    async with asyncio.timeout(BOUND_S):
        while not condition():
            await asyncio.sleep(INTERVAL_S / 4)


class Gateway:
    """The gateway's directory wiring (`gateway.service`): holder, watch, pipeline on a real store and log."""

    def __init__(self, net: LocalNetwork, store: GatewayStore, audit: AuditLog, holder: DirectoryHolder, file: Path):
        self.store, self.audit = store, audit

        async def adopt(signed: SignedStatement, directory: Directory) -> None:
            await holder.adopt(signed, directory, store=store, audit=audit, now=NOW)

        self.watch = DirectoryWatch(
            file,
            authority=net.authority.public_key,
            directory=holder.current,
            clock=lambda: NOW,
            limits=net.limits,
            interval_s=INTERVAL_S,
            adopt=adopt,
        )
        self.broker = InMemoryBroker()
        self.pipeline = IngressPipeline(
            identity=GatewayIdentity(
                gateway_id="gateway.test", evidence_key=net.evidence_key, broker_user_prefix=PREFIX
            ),
            directory=self.watch,
            store=store,
            audit=audit,
            publisher=self.broker,
            limits=net.limits,
            clock=lambda: NOW,
            attachments=None,
        )

    async def directory_leaves(self) -> list[str]:
        return [record.identity for record in await self.store.leaves(limit=1000) if record.kind == "directory"]


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[LocalNetwork, Gateway, Path]]:
    net = LocalNetwork()
    file = write(tmp_path / "directory.json", net.signed_directory())
    store = await GatewayStore.open(tmp_path / "gateway.db")
    try:
        audit = await AuditLog.load(store, origin="rogatory.test/audit-log", log_key=net.log_key)
        holder = await DirectoryHolder.load(
            file, authority=net.authority.public_key, store=store, audit=audit, now=NOW, limits=net.limits
        )
        yield net, Gateway(net, store, audit, holder, file), file
    finally:
        await store.close()


def from_bd(net: LocalNetwork) -> IngressDelivery:
    return IngressDelivery(
        body=net.seal().to_bytes(), kind=KIND_SEALED_MESSAGE, user_id=PREFIX + BD, amqp_message_id=None
    )


async def test_a_key_revoked_in_a_new_directory_version_is_refused_by_the_running_gateway_within_the_bound(
    gateway: tuple[LocalNetwork, Gateway, Path],
) -> None:
    """BD's key revoked in version 2: the running gateway takes it within the bound, logs it, refuses BD."""
    net, gw, file = gateway
    assert (await gw.pipeline.handle(from_bd(net))).result == "relayed"
    async with watching(gw.watch):
        write(file, sign(net, revoking_bd(net, 2)))
        await within_bound(lambda: gw.watch.held.version == 2)
        refused = await gw.pipeline.handle(from_bd(net))
    assert (refused.result, refused.code) == ("rejected", ErrorCode.KEY_REVOKED)
    assert len(await gw.directory_leaves()) == 2  # version 2 is an audit-log leaf, appended before it took effect


def sign(net: LocalNetwork, directory: Directory) -> SignedStatement:
    return sign_directory(directory, net.authority)


async def test_a_rolled_back_directory_file_is_refused_and_the_current_version_stays(
    gateway: tuple[LocalNetwork, Gateway, Path],
) -> None:
    """With version 2 in force, version 1 and another document as version 2 are refused and logged; 2 stays."""
    net, gw, file = gateway
    async with watching(gw.watch):
        write(file, sign(net, revoking_bd(net, 2)))
        await within_bound(lambda: gw.watch.held.version == 2)
        with capture_logs() as logs:
            write(file, net.signed_directory(version=1))
            await within_bound(lambda: any(line["event"] == "directory_refused" for line in logs))
            write(file, net.signed_directory(version=2))  # version 2 again, but without the revocation
            await within_bound(lambda: sum(line["event"] == "directory_refused" for line in logs) == 2)
    refusals = [line for line in logs if line["event"] == "directory_refused"]
    assert [line["code"] for line in refusals] == [ErrorCode.DIRECTORY_ROLLBACK] * 2
    assert all(line["version_in_force"] == 2 for line in refusals)
    assert gw.watch.current == revoking_bd(net, 2)
    assert (await gw.pipeline.handle(from_bd(net))).code == ErrorCode.KEY_REVOKED
    assert len(await gw.directory_leaves()) == 2  # nothing refused was logged as a version


def bd_message(net: LocalNetwork) -> bytes:
    message_id = MessageId(uuid.uuid4())
    return seal(
        valid_document(message_id),
        message_id=message_id,
        sender=BD,
        signing_key=net[BD].signing,
        recipients=[Recipient(LY, net[LY].encryption.public_key)],
        archive_key=None,
        message_type="MLA_REQUEST",
        case_id=CaseId("BD-LY-2025-0007"),
        created_at=NOW,
        expires_at=NOW + timedelta(days=1),
        limits=net.limits,
    ).to_bytes()


def agent_watch(net: LocalNetwork, file: Path, data_dir: Path, clock: Callable[[], datetime]) -> DirectoryWatch:
    """The agent's directory wiring (`agents.service`): the watch, remembering each version against rollback."""
    remember_directory(data_dir, net.directory())

    async def adopt(_signed: SignedStatement, directory: Directory) -> None:
        await asyncio.to_thread(remember_directory, data_dir, directory)

    return DirectoryWatch(
        file,
        authority=net.authority.public_key,
        directory=net.directory(),
        clock=clock,
        limits=net.limits,
        interval_s=INTERVAL_S,
        adopt=adopt,
    )


async def test_a_key_revoked_in_a_new_directory_version_is_refused_by_a_running_agent_within_the_bound(
    tmp_path: Path,
) -> None:
    """BD's key revoked in version 2: LY's running agent takes it within the bound and refuses BD (KEY_REVOKED)."""
    net = LocalNetwork()
    file = write(tmp_path / "directory.json", net.signed_directory())
    watch = agent_watch(net, file, tmp_path, lambda: NOW)
    agent = await start_agent(net, net.directory(), LY, tmp_path, in_force=watch)  # as `agents.service` wires it
    try:
        delivered = await agent.receiver.handle(InboxDelivery(bd_message(net), KIND_SEALED_MESSAGE, GATEWAY_USER))
        assert delivered.result == "delivered", delivered
        async with watching(watch):
            write(file, sign(net, revoking_bd(net, 2)))
            await within_bound(lambda: watch.held.version == 2)
            refused = await agent.receiver.handle(InboxDelivery(bd_message(net), KIND_SEALED_MESSAGE, GATEWAY_USER))
        assert (refused.result, refused.code) == ("dropped", ErrorCode.KEY_REVOKED)
        assert (tmp_path / HELD_FILE).read_text().startswith("2 ")  # remembered: a restart cannot roll it back
        write(file, net.signed_directory(version=1))
        assert await watch.check() is False
        assert watch.current.version == 2
    finally:
        await agent.close()


async def test_an_expired_directory_makes_the_agent_refuse_traffic_and_report_degraded_until_a_newer_one(
    tmp_path: Path,
) -> None:
    """Past its expiry: deliveries held, the API answers 503 DIRECTORY_EXPIRED, health alarms; version 2 ends it."""
    net = LocalNetwork()
    file = write(tmp_path / "directory.json", net.signed_directory())
    now = [NOW]
    watch = agent_watch(net, file, tmp_path, lambda: now[0])
    bd = await start_agent(net, net.directory(), BD, tmp_path, in_force=watch, clock=lambda: now[0])
    request = valid_document(MessageId(uuid.uuid4()))
    try:
        assert (watch.health()["directory_expired"], watch.alarms()) == (False, [])
        now[0] = net.directory().expires_at
        status, answer = await bd.submit(request)
        assert (status, answer["code"]) == (503, ErrorCode.DIRECTORY_EXPIRED), answer
        with pytest.raises(DirectoryExpired):  # a transient failure: the consumer holds the delivery, never drops it
            await bd.receiver.handle(InboxDelivery(bd_message(net), KIND_SEALED_MESSAGE, GATEWAY_USER))
        assert watch.health()["directory_expired"] is True
        assert "expired" in watch.alarms()[0]
        write(file, net.signed_directory(version=2, expires_at=now[0] + timedelta(days=30)))
        async with watching(watch):
            await within_bound(lambda: watch.held.version == 2)
        assert (watch.health()["directory_expired"], watch.alarms()) == (False, [])
        status, answer = await bd.submit(request)
        assert status == 202, answer
    finally:
        await bd.close()
