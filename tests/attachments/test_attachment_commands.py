"""`rogatory send --attach`, `inbox`, `fetch` and `bench-attachments`, run as users run them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deploy.client.samples import REQUEST_SAMPLE, sample
from deploy.client.transfer import file_sha256
from tests.attachments.conftest import BD, LY, Network, request_with

pytestmark = [pytest.mark.e2e, pytest.mark.broker]


def rogatory(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deploy", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_send_inbox_and_fetch_carry_files_from_the_command_line(network: Network, tmp_path: Path):
    """`send --attach` twice uploads both files (with a progress bar) and lists them in the document;
    `inbox` shows them available at the recipient; `fetch` writes them byte-identical."""
    first, second = tmp_path / "record.bin", tmp_path / "scan.pdf"
    first.write_bytes(os.urandom(2 * 1024 * 1024 + 1))
    second.write_bytes(os.urandom(1000))
    document = request_with([])
    document_file = tmp_path / "request.json"
    document_file.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    state = ("--state-dir", str(network.root))

    sent = rogatory("send", str(document_file), "--attach", str(first), "--attach", str(second), *state, "--agency", BD)
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout) == {"message_id": document["message_id"], "status": "queued"}
    assert "record.bin" in sent.stderr
    assert "100.0%" in sent.stderr

    deadline = time.monotonic() + 90
    while True:
        listed = rogatory("inbox", *state, "--agency", LY)
        assert listed.returncode == 0, listed.stderr
        mine = [item for item in json.loads(listed.stdout) if item["message_id"] == document["message_id"]]
        states = {entry["attachment_id"]: entry["state"] for entry in (mine[0]["attachments"] if mine else [])}
        if states.get("ATT-1") == "available" and states.get("ATT-2") == "available":
            break
        assert time.monotonic() < deadline, f"attachments not available in time: {states}"
        time.sleep(0.5)
    assert {states[e["attachment_id"]] for e in sample(REQUEST_SAMPLE)["attachments"]} == {"description_only"}

    out = tmp_path / "fetched"
    fetched = rogatory("fetch", document["message_id"], "--out", str(out), *state, "--agency", LY, "--quiet")
    assert fetched.returncode == 0, fetched.stderr
    by_id = {item["attachment_id"]: item for item in json.loads(fetched.stdout)}
    assert (out / "ATT-1").read_bytes() == first.read_bytes()
    assert (out / "ATT-2").read_bytes() == second.read_bytes()
    assert by_id["ATT-1"]["sha256"] == file_sha256(first)[0]


def test_bench_attachments_prints_throughput_and_memory_beside_a_plain_copy(network: Network, tmp_path: Path):
    """The benchmark moves a file through the whole path and prints each stage's throughput, the plain
    copy's, and the peak memory growth of every process; the file arrived byte-identical and logged."""
    figures_file = tmp_path / "figures.json"
    result = rogatory("bench-attachments", "--mib", "16", "--state-dir", str(network.root), "--json", str(figures_file))
    assert result.returncode == 0, result.stdout + result.stderr
    for line in ("plain copy, same disk", "end to end", "gateway", f"agent {BD}", f"agent {LY}", "client"):
        assert line in result.stdout
    figures = json.loads(figures_file.read_text())
    assert figures["byte_identical"] is True
    assert figures["audit_logged"] is True
    assert figures["plain_copy_mib_s"] > 0
    assert figures["end_to_end_mib_s"] > 0
    assert set(figures["rss_growth_mib"]) == {"gateway", f"agent {BD}", f"agent {LY}", "client (this process)"}
