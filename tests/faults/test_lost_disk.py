"""Lost-disk drills: the gateway's, then an agent's disk lost mid-stream and the last backup restored.

Each drill prints its figures (messages before and after the backup,
recovered, reported; the log's size at the backup, witnessed, restored and
at the end) and checks the guarantees of SECURITY.md "Lost disk": the gateway
never signs a checkpoint below one its witnesses cosigned, brings its log back
to that size from the leaves the agents hold (verified against the cosigned
root), no witness sees a fork, no message reaches an inbox twice, every
message accepted after the backup is recovered or reported, and the audit log
verifies at the end.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.faults.conftest import SYSTEM_AMQP_URL, SYSTEM_MANAGEMENT_URL
from tests.faults.figures import DELIVERED_STATUSES
from tests.faults.harness import RECIPIENT, SENDER, FaultNetwork, Traffic, inbox_counts, statuses
from tests.faults.lostdisk import (
    LostDiskFigures,
    agency_loss,
    at_status,
    audit_verdict,
    delivered,
    delivery_counts,
    gateway_get,
    leaves_in,
    log_size,
    proofs_held,
    say,
    wait_until,
    witness_state,
    witnessed_everywhere,
)
from tests.support.backup import backup_data_dir, database_in, restore_data_dir

pytestmark = [pytest.mark.faults, pytest.mark.broker, pytest.mark.e2e]

RELAYED = frozenset({"relayed"})


def _management() -> str:
    return SYSTEM_MANAGEMENT_URL or f"http://{urlsplit(SYSTEM_AMQP_URL).hostname or '127.0.0.1'}:15672"


async def _send(traffic: Traffic, count: int) -> list[str]:
    """`count` notes, each until its agent answered 202; their message ids."""
    documents = traffic.notes(count)
    await traffic.send(documents, concurrency=8)
    ids = [document["message_id"] for document in documents]
    assert set(ids) <= traffic.accepted, "every note was accepted by the sender's agent"
    return ids


async def _until_delivered(network: FaultNetwork, session: Any, ids: Iterable[str], within_s: float = 90.0) -> None:
    wanted = list(ids)
    await wait_until(
        f"{len(wanted)} messages delivered",
        lambda: at_status(network, session, wanted, DELIVERED_STATUSES),
        within_s=within_s,
    )


async def test_gateway_disk_lost_and_restored_gets_its_log_back_from_the_witnesses_and_never_forks(
    tmp_path, session, report
):
    """The gateway's disk is lost after 20 messages went through it since its last backup (15 delivered, 5 relayed
    to a recipient that is down, their DELIVERY owed) while 5 more are submitted; the backup is restored and
    held (`rogatory log-recovery hold`). It signs nothing until the agents gave back the lost leaves and they rebuilt
    the witnessed root, then carries on: nothing forked, nothing delivered twice, each message recovered or reported."""
    started = time.monotonic()
    figures = LostDiskFigures("gateway disk lost with messages in flight, last backup restored")
    network = await FaultNetwork.start(tmp_path / "net", amqp_url=SYSTEM_AMQP_URL, management_url=_management())
    try:
        traffic = Traffic(network, session)
        await traffic.open_cases(1)
        before = [*traffic.accepted, *await _send(traffic, 10)]
        await _until_delivered(network, session, before)
        data = network.paths.data("gateway")
        backup = tmp_path / "gateway-backup.tar"
        await backup_data_dir(data, backup)
        size_at_backup = leaves_in(database_in(backup, "gateway.db", tmp_path / "gateway-backed-up"))
        say(f"gateway backed up at log size {size_at_backup}")

        delivered_after = await _send(traffic, 15)
        await _until_delivered(network, session, delivered_after)
        await network.terminate(RECIPIENT)
        owed = await _send(traffic, 5)
        await wait_until("5 messages relayed", lambda: at_status(network, session, owed, RELAYED))
        witnessed = await witnessed_everywhere(network, session)
        after_backup = [*delivered_after, *owed]
        await wait_until("the sender holds every proof", lambda: proofs_held(network, session, after_backup))
        say(f"log witnessed by every agent at size {witnessed}")

        network.kill("gateway")
        during = await _send(traffic, 5)  # submitted while the gateway is down: they wait in its ingress queue
        restored_said = await restore_data_dir(backup, data)  # a restored gateway's log starts held
        assert "starts held" in restored_said, restored_said
        restore_started = time.time()
        await network.restart()  # the gateway with its restored disk, and the recipient back
        say("gateway restored from its backup and started held")

        async def recovered() -> dict[str, Any] | None:
            status, body = await gateway_get(network, session, "/v1/audit/recovery")
            return body if status == 200 and not body["recovering"] and body.get("recovered") else None

        recovery: dict[str, Any] = await wait_until("the log recovered", recovered, within_s=120)
        after_restore = await _send(traffic, 5)
        await _until_delivered(network, session, [*during, *after_restore])
        await wait_until("the owed messages reached the recipient", lambda: _in_inbox(network, session, owed))
        with contextlib.suppress(AssertionError):  # counted below: recovered, or reported
            await _until_delivered(network, session, owed, within_s=30)
        await witnessed_everywhere(network, session)
        _, report_at_end = await gateway_get(network, session, "/v1/audit/recovery")

        everything = [*before, *after_backup, *during, *after_restore]
        inbox, status = await delivery_counts(network, session, everything)
        _, checkpoints = await gateway_get(network, session, "/v1/audit/checkpoints")
        signed_since = [c for c in checkpoints["checkpoints"] if _epoch(c["signed_at"]) >= int(restore_started)]
        below = [c["tree_size"] for c in signed_since if c["tree_size"] < witnessed]
        unrecorded = {item["message_id"] for item in report_at_end["unrecorded_messages"]}
        recovered_ids = [m for m in after_backup if status[m] in DELIVERED_STATUSES and inbox.get(m, 0) >= 1]
        reported_ids = [m for m in after_backup if m not in recovered_ids and m in unrecorded]
        lost_unreported = [
            m for m in [*before, *after_backup, *during, *after_restore] if _lost(m, inbox, status, unrecorded)
        ]
        witnesses = {
            agency: witness_state(network.paths.data(agency) / "agent.db") for agency in network.stack["agents"]
        }
        verdict, consistent = await audit_verdict(network)
        events = _gateway_events(network.paths.root / "gateway" / "gateway.log")

        figures.add("messages before the backup", f"{len(before)}, delivered {delivered(inbox, status, before)}")
        figures.add(
            "messages after the backup",
            f"{len(after_backup)}: {len(delivered_after)} delivered before the loss, "
            f"{len(owed)} relayed to a recipient that was down (DELIVERY owed)",
        )
        figures.add("submitted while it was down", f"{len(during)}, delivered {delivered(inbox, status, during)}")
        figures.add(
            "sent after the restore", f"{len(after_restore)}, delivered {delivered(inbox, status, after_restore)}"
        )
        figures.add("log size at the backup", size_at_backup)
        figures.add("log size witnessed", f"{witnessed} (cosigned by {len(witnesses)} witnesses)")
        figures.add("log size restored", f"{recovery['restored_size']} (held: no append, no checkpoint)")
        figures.add(
            "leaves recovered",
            f"{recovery['recovered']['leaves']} from the agents' evidence, "
            f"{recovery['recovered']['from_size']} -> {recovery['recovered']['to_size']}, root = the witnessed root",
        )
        figures.add("log size at the end", await log_size(network, session))
        figures.add("checkpoints below witnessed", f"{len(below)} of {len(signed_since)} signed since the restore")
        figures.add("forks seen by witnesses", sum(len(forks) for _, forks in witnesses.values()))
        figures.add(
            "gateway records rebuilt",
            f"{recovery['recovered']['messages_rebuilt']} messages, from the recovered acceptance leaves",
        )
        figures.add(
            "recovered (delivered once)",
            f"{len(recovered_ids)} of {len(after_backup)} after the backup, "
            f"{sum(1 for m in owed if m in recovered_ids)} of the {len(owed)} owed a DELIVERY",
        )
        figures.add(
            "reported (gateway lost them)",
            f"{len(unrecorded)} named by the log, not in the gateway's records; "
            f"{len(reported_ids)} of them without their DELIVERY at the sender",
        )
        figures.add("lost and not reported", len(lost_unreported))
        figures.add("in an inbox twice", sum(copies - 1 for copies in inbox.values() if copies > 1))
        figures.add("audit log", verdict)
        figures.notes.append(
            "gateway logged: " + ", ".join(f"{name} {count}" for name, count in sorted(events.items()) if count)
        )
        figures.seconds = time.monotonic() - started
        report(figures)

        assert recovery["restored_size"] == size_at_backup
        assert recovery["recovered"]["from_size"] == size_at_backup
        assert recovery["recovered"]["to_size"] == witnessed > size_at_backup
        assert events["audit_log_recovering"] >= 1, "the held state was logged"
        assert below == [], f"checkpoints below the witnessed size {witnessed} were signed: {below}"
        assert all(forks == [] for _, forks in witnesses.values()), witnesses
        assert all(inbox.get(m, 0) <= 1 for m in everything), "a message reached the inbox twice"
        assert lost_unreported == [], f"lost without a report: {lost_unreported}"
        assert recovery["recovered"]["messages_rebuilt"] == len(after_backup)
        assert set(after_backup) <= set(recovered_ids) | set(reported_ids)
        assert recovered_ids == after_backup, "each message after the backup delivered once, its DELIVERY at the sender"
        assert consistent, verdict
    finally:
        await network.destroy()


async def test_agent_disks_lost_and_restored_report_what_they_lost_and_witness_on_without_a_fork(
    tmp_path, session, report
):
    """The sender's and the recipient's agents lose their disks after 10 messages went between them since their last
    backup; both backups are restored. The messages they lost are named by the gateway's log (reported), their
    witnesses go on from their restored checkpoint without seeing a fork, and new messages flow, each delivered once."""
    started = time.monotonic()
    figures = LostDiskFigures("sender's and recipient's agent disks lost, last backups restored")
    network = await FaultNetwork.start(tmp_path / "net", amqp_url=SYSTEM_AMQP_URL, management_url=_management())
    try:
        traffic = Traffic(network, session)
        await traffic.open_cases(1)
        before = [*traffic.accepted, *await _send(traffic, 5)]
        await _until_delivered(network, session, before)
        await witnessed_everywhere(network, session)
        backups = {agency: tmp_path / f"{agency}-backup.tar" for agency in (SENDER, RECIPIENT)}
        for agency, backup in backups.items():
            await backup_data_dir(network.paths.data(agency), backup)
        witnessed_at_backup = {
            agency: witness_state(database_in(backup, "agent.db", tmp_path / f"{agency}-backed-up"))[0]
            for agency, backup in backups.items()
        }

        after_backup = await _send(traffic, 10)
        await _until_delivered(network, session, after_backup)
        witnessed_at_loss = await witnessed_everywhere(network, session)
        for agency, backup in backups.items():
            network.kill(agency)
            await restore_data_dir(backup, network.paths.data(agency))
        restored = {agency: witness_state(network.paths.data(agency) / "agent.db")[0] for agency in backups}
        await network.restart()
        say("sender's and recipient's agents restored from their backups")

        after_restore = await _send(traffic, 5)
        await _until_delivered(network, session, after_restore)
        witnessed_at_end = await witnessed_everywhere(network, session)
        sender_loss = await agency_loss(network, session, SENDER)
        recipient_loss = await agency_loss(network, session, RECIPIENT)
        everything = [*before, *after_backup, *after_restore]
        inbox = await inbox_counts(network, session)
        answers = await statuses(network, session, [*before, *after_restore])
        witnesses = {
            agency: witness_state(network.paths.data(agency) / "agent.db") for agency in network.stack["agents"]
        }
        verdict, consistent = await audit_verdict(network)

        in_outbox = sum(1 for m in after_backup if m not in sender_loss.sent_unknown)
        in_inbox = sum(1 for m in after_backup if inbox.get(m, 0) >= 1)
        figures.add(
            "messages before the backups", f"{len(before)}, still at both agents: {_kept(before, answers, inbox)}"
        )
        figures.add("sent after the backup", f"{len(after_backup)}: {in_outbox} in the restored outbox")
        figures.add(
            "  reported",
            f"{len(sender_loss.sent_unknown & set(after_backup))} named by the log's evidence, not in the outbox",
        )
        figures.add("received after the backup", f"{len(after_backup)}: {in_inbox} in the restored inbox")
        figures.add(
            "  reported",
            f"{len(recipient_loss.received_unknown & set(after_backup))} with the recipient's DELIVERY in the log, "
            "not in its inbox",
        )
        figures.add(
            "sent after the restore", f"{len(after_restore)}, delivered once {_kept(after_restore, answers, inbox)}"
        )
        figures.add(
            "log size witnessed",
            f"at the backups {witnessed_at_backup[SENDER]}/{witnessed_at_backup[RECIPIENT]} (sender/recipient), "
            f"at the loss {witnessed_at_loss}, restored {restored[SENDER]}/{restored[RECIPIENT]}, "
            f"at the end {witnessed_at_end}",
        )
        figures.add("forks seen by witnesses", sum(len(forks) for _, forks in witnesses.values()))
        figures.add("in an inbox twice", sum(copies - 1 for copies in inbox.values() if copies > 1))
        figures.add("audit log", verdict)
        figures.seconds = time.monotonic() - started
        report(figures)

        assert in_outbox == 0, "the restored sender holds nothing it sent after its backup"
        assert in_inbox == 0, "the restored recipient holds nothing it received after its backup"
        assert set(after_backup) <= sender_loss.sent_unknown, "every message sent after the backup is reported"
        assert set(after_backup) <= recipient_loss.received_unknown, "every message received after it is reported"
        assert not sender_loss.sent_unknown & set(before), "nothing from before the backup is reported lost"
        assert not recipient_loss.received_unknown & set(before), "nothing from before the backup is reported lost"
        assert _kept(before, answers, inbox) == len(before)
        assert _kept(after_restore, answers, inbox) == len(after_restore)
        assert restored == witnessed_at_backup, "each witness went back to its backup's checkpoint"
        assert witnessed_at_end > witnessed_at_loss >= max(restored.values())
        assert all(forks == [] for _, forks in witnesses.values()), witnesses
        assert all(inbox.get(m, 0) <= 1 for m in everything), "a message reached the inbox twice"
        assert consistent, verdict
    finally:
        await network.destroy()


def _kept(ids: list[str], answers: Mapping[str, Mapping[str, Any]], inbox: Any) -> int:
    """Messages delivered once, with their DELIVERY at the sender."""
    return sum(1 for m in ids if inbox.get(m, 0) == 1 and answers[m]["status"] in DELIVERED_STATUSES)


def _lost(message_id: str, inbox: Any, status: dict[str, str], unrecorded: set[str]) -> bool:
    """Neither delivered once with its DELIVERY at the sender, nor named by the gateway's report."""
    return (
        not (inbox.get(message_id, 0) >= 1 and status[message_id] in DELIVERED_STATUSES)
        and message_id not in unrecorded
    )


async def _in_inbox(network: FaultNetwork, session: Any, ids: list[str]) -> bool:
    inbox = await inbox_counts(network, session)
    return all(inbox.get(m, 0) >= 1 for m in ids)


def _epoch(timestamp: str) -> float:
    from protocol.encoding import parse_timestamp  # noqa: PLC0415 - only here

    return parse_timestamp(timestamp).timestamp()


def _gateway_events(path: Path) -> dict[str, int]:
    import json  # noqa: PLC0415 - only here

    wanted = ("audit_log_recovering", "audit_log_recovery_done", "audit_log_recovery_root_mismatch", "evidence_refused")
    counts = dict.fromkeys(wanted, 0)
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("event") in counts:
            counts[str(record["event"])] += 1
    return counts
