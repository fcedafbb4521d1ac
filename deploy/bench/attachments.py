"""`rogatory bench-attachments`: one large file from BD-MOHA-PSD to LY-MLA-CA, against a plain copy.

On a local network (a fresh one, or the one in `--state-dir`), it writes a
file of N MiB next to the network's data (the same disk), copies it once with
the standard library (the baseline), then moves it through the whole path:
upload to the sending agent (encrypted there), submission, push to the
gateway's blob store, fetch, verification and decryption by the recipient
agent, download by the recipient's system. It prints the throughput of each
stage beside the plain copy, and the peak growth of resident memory of every
process involved (gateway, both agents, and this client) over its resident
memory before the transfer. It checks that the file arrived byte-identical
(SHA-256) and that the audit log holds the signed header committing to it.

Peak memory is the kernel's high-water mark (`VmHWM`, reset through
`/proc/<pid>/clear_refs` before the transfer where allowed) and, in any case,
the highest `VmRSS` sampled every 50 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from deploy.client.agent_api import AgentClient, InboxMessage, poll
from deploy.client.samples import REQUEST_SAMPLE, sample
from deploy.client.transfer import CHUNK_BYTES, attachment_entry, download_attachment, upload_file
from deploy.localnet.devstack import destroy, down, trusting, up
from protocol.auditlog import AttachmentsLeaf, decode_leaf
from protocol.encoding import b64decode

SENDER, RECIPIENT = "BD-MOHA-PSD", "LY-MLA-CA"
MIB = 1024 * 1024


def _status_kib(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key == name:
            return int(rest.split()[0])
    return 0


@dataclass
class MemoryWatch:
    """Peak resident memory of some processes over a stretch of time, against where each started."""

    pids: dict[str, int]
    interval_s: float = 0.05
    baseline_kib: dict[str, int] = field(default_factory=dict)
    peak_kib: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        """Take the baselines, reset the kernel's high-water marks, start sampling."""
        for name, pid in self.pids.items():
            with contextlib.suppress(OSError):
                Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset VmHWM to the current RSS
            self.baseline_kib[name] = _status_kib(pid, "VmRSS")
            self.peak_kib[name] = self.baseline_kib[name]
        self._thread = threading.Thread(target=self._sample, name="memory-watch", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            for name, pid in self.pids.items():
                with contextlib.suppress(OSError, ValueError):
                    self.peak_kib[name] = max(self.peak_kib[name], _status_kib(pid, "VmRSS"))

    def stop(self) -> dict[str, float]:
        """Stop sampling; growth of each process's peak over its baseline, in MiB."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        growth = {}
        for name, pid in self.pids.items():
            with contextlib.suppress(OSError, ValueError):
                self.peak_kib[name] = max(self.peak_kib[name], _status_kib(pid, "VmHWM"))
            growth[name] = round((self.peak_kib[name] - self.baseline_kib[name]) / 1024, 1)
        return growth


@dataclass(frozen=True)
class AttachmentFigures:
    """What one run measured."""

    size_bytes: int
    plain_copy_mib_s: float
    upload_mib_s: float
    transit_mib_s: float
    download_mib_s: float
    end_to_end_mib_s: float
    rss_growth_mib: dict[str, float]
    byte_identical: bool
    audit_logged: bool
    message_id: str
    ciphertext_sha256: str


def write_test_file(path: Path, size: int) -> None:
    """`size` bytes that do not repeat at any chunk (a random block, each chunk numbered)."""
    block = os.urandom(CHUNK_BYTES)
    with path.open("wb") as sink:
        written, counter = 0, 0
        while written < size:
            piece = (counter.to_bytes(8, "big") + block[8:])[: size - written]
            sink.write(piece)
            written += len(piece)
            counter += 1


def plain_copy(source: Path, target: Path) -> float:
    """Copy a file with the standard library and fsync it; seconds taken (the benchmark's baseline)."""
    started = time.monotonic()
    with source.open("rb") as reader, target.open("wb") as writer:
        shutil.copyfileobj(reader, writer, CHUNK_BYTES)
        writer.flush()
        os.fsync(writer.fileno())
    return time.monotonic() - started


def _rate(size: int, seconds: float) -> float:
    return round(size / MIB / max(seconds, 1e-6), 1)


async def move_file(
    stack: dict[str, Any], source: Path, work: Path, *, say: Callable[[str], None] = print
) -> AttachmentFigures:
    """Send `source` from SENDER to RECIPIENT through `stack`, measuring each stage and memory."""
    size = (await asyncio.to_thread(source.stat)).st_size
    sender, recipient = stack["agents"][SENDER], stack["agents"][RECIPIENT]
    pids = {
        "gateway": int(stack["gateway"]["pid"]),
        f"agent {SENDER}": int(sender["pid"]),
        f"agent {RECIPIENT}": int(recipient["pid"]),
        "client (this process)": os.getpid(),
    }
    say(f"  plain copy of {size / MIB:.0f} MiB on the same disk ...")
    copy_s = plain_copy(source, work / "plain-copy.bin")
    (work / "plain-copy.bin").unlink()
    watch = MemoryWatch(pids)
    watch.start()
    started = time.monotonic()
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=600)
    async with aiohttp.ClientSession(timeout=timeout, connector=trusting(stack)) as session:
        say("  upload to the sending agent (encrypted there) ...")
        uploaded = await upload_file(session, sender["url"], sender["token"], source)
        upload_s = time.monotonic() - started
        document = sample(REQUEST_SAMPLE)
        document["message_id"] = str(uuid.uuid4())
        document["case_id"] = f"BD-LY-BENCH-{document['message_id'][:8].upper()}"
        document["attachments"] = [
            *document.get("attachments", []),
            attachment_entry(source, uploaded["sha256"], uploaded["size_bytes"], "BENCH-FILE"),
        ]
        submitted_at = time.monotonic()
        await AgentClient(session, sender["url"], sender["token"]).submit(document)
        receiving = AgentClient(session, recipient["url"], recipient["token"])
        say("  submission, push to the gateway, fetch and verification by the recipient ...")

        async def available() -> InboxMessage | None:
            item = await receiving.wait_for_inbox(document["message_id"], within_s=600)
            states = {entry["attachment_id"]: entry["state"] for entry in item.get("attachments", [])}
            if states.get("BENCH-FILE") == "failed":
                raise RuntimeError(f"the recipient refused the body: {item['attachments']}")
            return item if states.get("BENCH-FILE") == "available" else None

        await poll(available, within_s=3600, what="the body at the recipient", interval=0.5)
        transit_s = time.monotonic() - submitted_at
        say("  download by the recipient's system ...")
        downloaded_at = time.monotonic()
        out = work / "received.bin"
        got_sha, got_size = await download_attachment(
            session,
            recipient["url"],
            recipient["token"],
            message_id=document["message_id"],
            attachment_id="BENCH-FILE",
            out=out,
        )
        download_s = time.monotonic() - downloaded_at
        total_s = time.monotonic() - started
        growth = watch.stop()
        leaf = await _attachments_leaf(session, stack, document["message_id"])
    out.unlink(missing_ok=True)
    return AttachmentFigures(
        size_bytes=size,
        plain_copy_mib_s=_rate(size, copy_s),
        upload_mib_s=_rate(size, upload_s),
        transit_mib_s=_rate(size, transit_s),
        download_mib_s=_rate(size, download_s),
        end_to_end_mib_s=_rate(size, total_s),
        rss_growth_mib=growth,
        byte_identical=(got_sha, got_size) == (uploaded["sha256"], size),
        audit_logged=leaf is not None,
        message_id=document["message_id"],
        ciphertext_sha256="" if leaf is None else leaf.attachments[0].ciphertext_sha256,
    )


async def _attachments_leaf(
    session: aiohttp.ClientSession, stack: dict[str, Any], message_id: str
) -> AttachmentsLeaf | None:
    gateway = stack["gateway"]
    async with session.get(
        f"{gateway['url']}/v1/audit/entries",
        params={"message_id": message_id, "limit": "100"},
        headers={"Authorization": f"Bearer {gateway['auditor_token']}"},
    ) as response:
        entries = (await response.json())["entries"] if response.status == 200 else []
    for entry in entries:
        leaf = decode_leaf(b64decode(entry["leaf"]))
        if isinstance(leaf, AttachmentsLeaf):
            return leaf
    return None


def print_figures(figures: AttachmentFigures, say: Callable[[str], None] = print) -> None:
    """The table of one run."""
    say(f"Attachment of {figures.size_bytes / MIB:.0f} MiB, {SENDER} -> {RECIPIENT} (message {figures.message_id})")
    say(f"  {'plain copy, same disk':<44} {figures.plain_copy_mib_s:>9.1f} MiB/s")
    say(f"  {'upload to the sending agent (+ encryption)':<44} {figures.upload_mib_s:>9.1f} MiB/s")
    say(f"  {'submit -> verified at the recipient':<44} {figures.transit_mib_s:>9.1f} MiB/s")
    say(f"  {'download by the recipient system':<44} {figures.download_mib_s:>9.1f} MiB/s")
    say(f"  {'end to end':<44} {figures.end_to_end_mib_s:>9.1f} MiB/s")
    say("  peak resident memory growth during the transfer:")
    for name, growth in figures.rss_growth_mib.items():
        say(f"    {name:<40} {growth:>8.1f} MiB")
    say(f"  byte-identical: {figures.byte_identical}; ciphertext logged in the audit log: {figures.audit_logged}")


def run_attachment_bench(
    *,
    amqp_url: str,
    management_url: str | None,
    mib: int,
    state_dir: Path | None,
    json_out: Path | None,
    say: Callable[[str], None] = print,
) -> int:
    """Run the benchmark on the network in `state_dir` (started if needed) or a fresh one; 0 unless it broke."""
    fresh = state_dir is None
    root = state_dir or Path(tempfile.mkdtemp(prefix="rogatory-attachbench-"))

    async def run() -> AttachmentFigures:
        stack = await up(root, amqp_url=amqp_url, management_url=management_url, say=say)
        work = Path(tempfile.mkdtemp(prefix="work-", dir=root))
        source = work / "source.bin"
        say(f"  writing a {mib} MiB test file in {work} ...")
        await asyncio.to_thread(write_test_file, source, mib * MIB)
        try:
            return await move_file(stack, source, work, say=say)
        finally:
            await asyncio.to_thread(shutil.rmtree, work, ignore_errors=True)

    try:
        figures = asyncio.run(run())
    finally:
        if fresh:
            down(root, say=lambda _: None)
            asyncio.run(destroy(root, amqp_url=amqp_url, management_url=management_url))
            shutil.rmtree(root, ignore_errors=True)
    print_figures(figures, say)
    out = json_out or (None if fresh else root / "bench-attachments.json")
    if out is not None:
        out.write_text(json.dumps(asdict(figures) | {"at": datetime.now(UTC).isoformat()}, indent=2) + "\n")
        say(f"  figures written to {out}")
    return 0 if figures.byte_identical and figures.audit_logged else 1


__all__ = ["AttachmentFigures", "MemoryWatch", "move_file", "print_figures", "run_attachment_bench", "write_test_file"]
