"""The consoles as people use them: in a real browser, against a real network.

An operator opens the gateway and sees the network's health, follows a
message to its evidence and re-drives a dead letter; an auditor browses the
log, verifies an inclusion proof and a checkpoint signature in the browser
(and sees a forged key refused), and downloads an export that the offline
verifier accepts. Each step leaves a screenshot in `test-artifacts/browser/`.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import os
import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aio_pika
import aiohttp
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from prometheus_client.parser import text_string_to_metric_families

from deploy.cli.auditor import read_export
from deploy.client.agent_api import AgentClient, MessageStatus
from deploy.client.samples import REQUEST_SAMPLE, sample
from deploy.localnet.devstack import trusting, up
from protocol.audit_verify import verify_audit_log
from protocol.encoding import b64decode
from protocol.keys import SigningPublicKey
from protocol.topology import inbox_queue
from tests.browser.conftest import AMQP_URL, MANAGEMENT_URL

expect = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed").expect
pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.broker]
BD, LY = "BD-MOHA-PSD", "LY-MLA-CA"
TIMEOUT_MS = 20_000


def _run(coroutine: Any) -> Any:
    """Run a coroutine to its end on a thread of its own (Playwright's sync API holds this thread's loop)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _fresh_request() -> dict[str, Any]:
    document = copy.deepcopy(sample(REQUEST_SAMPLE))
    document["message_id"] = str(uuid.uuid4())
    document["case_id"] = f"BD-LY-WEB-{uuid.uuid4().hex[:10].upper()}"
    return document


async def _send(network: dict[str, Any], document: dict[str, Any], wanted: set[str]) -> MessageStatus:
    entry = network["agents"][BD]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        bd = AgentClient(session, entry["url"], entry["token"])
        await bd.submit(document)
        return await bd.wait_for_status(document["message_id"], wanted, within_s=60)


def _page(chromium: Any, network: dict[str, Any], token: str) -> Any:
    # The consoles are under test here, not TLS (tests/security/test_http_tls.py): Chromium takes no CA file.
    page = chromium.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True, ignore_https_errors=True)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.errors = errors
    page.goto(network["gateway"]["url"] + "/")
    page.fill("#token", token)
    page.click("#sign-in")
    page.wait_for_selector("#tabs:not([hidden])", timeout=TIMEOUT_MS)
    return page


def _shot(page: Any, screenshots: Path, name: str) -> None:
    page.screenshot(path=str(screenshots / f"{name}.png"), full_page=True)


def _broker_ca(network: dict[str, Any]) -> Path | None:
    """The CA file the network's services verify the broker with (None when it runs without TLS)."""
    query = parse_qs(urlsplit(network["agents"][LY]["amqp_url"]).query)
    return Path(query["cafile"][0]) if "cafile" in query else None


def test_operator_sees_the_health_of_the_network_at_a_glance(network, chromium, screenshots):
    """Signed in as operator, the first page shows the gateway, every agency, every queue, the broker's TLS
    certificates with their expiry, and the alerts."""
    page = _page(chromium, network, network["gateway"]["operator_token"])
    page.wait_for_selector("#agencies tbody tr[data-agency]", timeout=TIMEOUT_MS)
    page.wait_for_selector("#queues tbody tr[data-queue]", timeout=TIMEOUT_MS)
    assert page.inner_text("#card-gateway") == "consuming"
    agencies = page.locator("#agencies tbody tr[data-agency]")
    assert sorted(agencies.evaluate_all("rows => rows.map(r => r.dataset.agency)")) == sorted(network["agents"])
    queues = page.locator("#queues tbody tr[data-queue]").evaluate_all("rows => rows.map(r => r.dataset.queue)")
    assert {"mla.gateway.ingress", "mla.dead", *(f"mla.inbox.{a}" for a in network["agents"])} <= set(queues)
    # the broker's management API counts consumers every few seconds: wait for a refresh that shows them
    expect(page.locator(f"#agencies tr[data-agency='{LY}'] td").nth(1)).to_have_text("connected", timeout=TIMEOUT_MS)
    assert page.locator("#alerts li").count() >= 1
    assert page.get_by_role("button", name="Network health").is_visible()
    ca_file = _broker_ca(network)
    https_ca = network["gateway"]["ca_file"]  # the gateway's own HTTPS CA is watched, AMQPS or not
    page.locator(f"#certificates tbody tr[data-certificate='{https_ca}']").wait_for(timeout=TIMEOUT_MS)
    if ca_file is not None:
        ca = x509.load_pem_x509_certificate(ca_file.read_bytes())
        subject = str(ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
        row = page.locator(f"#certificates tbody tr[data-certificate='{ca_file}']")
        row.wait_for(timeout=TIMEOUT_MS)
        assert row.get_attribute("data-subject") == subject
        cells = row.locator("td").all_inner_texts()
        assert cells[0] == subject, cells
        shown = cells[2].split(" ")[0]
        assert shown == ca.not_valid_after_utc.date().isoformat(), cells
        assert datetime.fromisoformat(shown).replace(tzinfo=UTC) > datetime.now(UTC), "the CA has not expired"
        assert page.locator(f"#certificates tbody tr[data-certificate='{ca_file.parent / 'server.pem'}']").count() == 1
    _shot(page, screenshots, "01-operator-network-health")
    assert page.errors == []
    page.close()


def test_operator_follows_a_message_to_its_evidence(network, chromium, screenshots):
    """Tracking a message by id, then its case, shows the evidence chain as a timeline, in order."""
    request = _fresh_request()
    _run(_send(network, request, {"delivered", "retrieved"}))
    page = _page(chromium, network, network["gateway"]["operator_token"])
    page.click("#tabs button[data-view='track']")
    page.fill("#track-query", request["message_id"])
    page.click("#track-button")
    message = page.locator(f".message[data-message='{request['message_id']}']")
    message.locator("li[data-step='DELIVERY']").wait_for(timeout=TIMEOUT_MS)
    steps = message.locator("li[data-step]").evaluate_all("items => items.map(i => i.dataset.step)")
    assert steps[:3] == ["SUBMISSION_ACCEPTED", "RELAY_ACCEPTED", "DELIVERY"], steps
    assert f"{BD} → {LY}" in message.inner_text()
    _shot(page, screenshots, "02-operator-track-message")

    page.fill("#track-query", request["case_id"])
    page.click("#track-button")
    page.locator(f".message[data-message='{request['message_id']}'] li[data-step='DELIVERY']").wait_for(
        timeout=TIMEOUT_MS
    )
    assert page.locator(".message").count() == 1
    assert page.errors == []
    page.close()


async def _reject_from_inbox(amqp_url: str, agency: str, message_id: str, within_s: float = 30.0) -> None:
    """Play an agent that cannot take one delivery: reject it without requeue, so the broker dead-letters it."""
    connection = await aio_pika.connect(amqp_url, timeout=10)
    try:
        channel = await connection.channel()
        queue = await channel.get_queue(inbox_queue(agency), ensure=False)  # type: ignore[arg-type]
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            delivery = await queue.get(no_ack=False, fail=False, timeout=5)
            if delivery is None:
                await asyncio.sleep(0.3)
                continue
            if delivery.message_id == message_id:
                await delivery.reject(requeue=False)
                return
            await delivery.nack(requeue=True)
        raise AssertionError(f"{message_id} never reached {inbox_queue(agency)}")  # type: ignore[arg-type]
    finally:
        await connection.close()


def _stop(pid: int, within_s: float = 20.0) -> None:
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)


def test_operator_redrives_a_dead_letter_and_the_decision_is_logged(network, chromium, screenshots):
    """A delivery the recipient rejected appears as a held dead letter with its reason; one click re-drives it,
    once the operator wrote a reason (the field starts empty and is required), the operator's reason is in
    the audit log, and the message then reaches the recipient."""
    _stop(network["agents"][LY]["pid"])
    request = _fresh_request()
    _run(_send(network, request, {"relayed"}))
    _run(_reject_from_inbox(network["agents"][LY]["amqp_url"], LY, request["message_id"]))

    page = _page(chromium, network, network["gateway"]["operator_token"])
    page.locator("#alerts li[data-code='inbox_without_consumer']").wait_for(timeout=TIMEOUT_MS)
    page.locator("#alerts li[data-code='dead_letters_present']").wait_for(timeout=TIMEOUT_MS)
    _shot(page, screenshots, "03-operator-alerts")
    page.click("#tabs button[data-view='dead-letters']")
    row = page.locator("#dead-letters tbody tr", has_text=request["message_id"])
    row.wait_for(timeout=TIMEOUT_MS)
    assert "rejected" in row.inner_text()
    assert f"mla.inbox.{LY}" in row.inner_text()
    _shot(page, screenshots, "04-operator-dead-letter-held")
    # The reason is the operator's own, logged as theirs: nothing is pre-filled, and no decision goes without one.
    reason = page.locator("#dl-reason")
    assert reason.input_value() == ""
    assert reason.evaluate("field => field.required && field.validity.valueMissing")
    row.locator("button[data-action='redrive']").click()
    page.locator("#dl-result", has_text="write the reason").wait_for(timeout=TIMEOUT_MS)
    assert row.locator("button[data-action='redrive']").count() == 1, "nothing was decided without a reason"
    page.fill("#dl-reason", "   ")
    row.locator("button[data-action='discard']").click()
    page.locator("#dl-result", has_text="write the reason").wait_for(timeout=TIMEOUT_MS)
    assert row.locator("button[data-action='discard']").count() == 1, "a blank reason is no reason"
    page.fill("#dl-reason", "recipient agent fixed, ticket OPS-42")
    row.locator("button[data-action='redrive']").click()
    page.locator("#dl-result", has_text="re-driven").wait_for(timeout=TIMEOUT_MS)
    page.select_option("#dl-state", "")
    done = page.locator("#dead-letters tbody tr", has_text=request["message_id"])
    expect(done.locator("td").nth(7)).to_contain_text("redriven", timeout=TIMEOUT_MS)
    assert not done.locator("button[data-action]").count(), "only a held dead letter can be decided on"
    _shot(page, screenshots, "05-operator-dead-letter-redriven")

    _run(up(network["root"], amqp_url=AMQP_URL, management_url=MANAGEMENT_URL, say=lambda _: None))
    page.click("#tabs button[data-view='track']")
    page.fill("#track-query", request["message_id"])
    page.click("#track-button")
    message = page.locator(f".message[data-message='{request['message_id']}']")
    message.locator("li[data-step='DEAD_LETTER']").wait_for(timeout=TIMEOUT_MS)
    redrive = message.locator("li[data-step='OPERATOR_REDRIVE_DEAD_LETTER']")
    redrive.wait_for(timeout=TIMEOUT_MS)
    assert "ticket OPS-42" in redrive.inner_text()
    deadline = time.monotonic() + 60
    while not message.locator("li[data-step='DELIVERY']").count() and time.monotonic() < deadline:
        time.sleep(1)
        page.click("#track-button")
    assert message.locator("li[data-step='DELIVERY']").count() == 1, "the re-driven message reached its recipient"
    _shot(page, screenshots, "06-operator-track-redriven")
    assert page.errors == []
    page.close()


def test_auditor_verifies_an_inclusion_proof_and_checkpoint_signature_in_the_browser(network, chromium, screenshots):
    """The browser itself checks the checkpoint's Ed25519 signature and the entry's inclusion proof and says
    VALID; with another key it says NOT VERIFIED. The auditor sees no operator view."""
    request = _fresh_request()
    _run(_send(network, request, {"delivered", "retrieved"}))
    page = _page(chromium, network, network["gateway"]["auditor_token"])
    assert not page.get_by_role("button", name="Network health").is_visible()
    assert not page.locator("#tabs button[data-view='dead-letters']").is_visible()
    page.click("#tabs button[data-view='audit']")
    page.fill("#audit-message", request["message_id"])
    page.click("#audit-button")
    page.locator("#audit-entries tbody tr[data-index]").first.wait_for(timeout=TIMEOUT_MS)
    assert "SUBMISSION_ACCEPTED" in page.inner_text("#audit-entries")
    _shot(page, screenshots, "07-auditor-audit-log")

    time.sleep(2)  # the next checkpoint (every second under traffic) covers the entry
    page.locator("#audit-entries tbody tr[data-index] button[data-verify]").first.click()
    page.wait_for_selector("#verdict.valid, #verdict.invalid", timeout=TIMEOUT_MS)
    verdict = page.inner_text("#verdict")
    assert verdict.startswith("VALID"), verdict
    assert page.locator("#verify-steps li.pass").count() == 3
    _shot(page, screenshots, "08-auditor-proof-valid")

    page.fill("#verify-key", base64.b64encode(os.urandom(32)).decode())
    page.click("#verify-button")
    page.wait_for_selector("#verdict.invalid", timeout=TIMEOUT_MS)
    assert "no signature by this key" in page.inner_text("#verdict")
    _shot(page, screenshots, "09-auditor-forged-key-refused")
    assert page.errors == []
    page.close()


def test_auditor_downloads_an_export_the_offline_verifier_accepts(network, chromium, screenshots, tmp_path):
    """The export the browser assembles is the `rogatory audit verify --export` format, and it verifies."""
    page = _page(chromium, network, network["gateway"]["auditor_token"])
    page.click("#tabs button[data-view='verify']")
    with page.expect_download(timeout=TIMEOUT_MS) as download:
        page.click("#export-button")
    path = tmp_path / "export.json"
    download.value.save_as(str(path))
    page.locator("#export-status", has_text="Exported").wait_for(timeout=TIMEOUT_MS)
    _shot(page, screenshots, "10-auditor-export")
    snapshot = read_export(path)
    assert snapshot.entries, "the export holds the log's entries"
    authority = SigningPublicKey(b64decode(network["network"]["authority_key"]))
    report = verify_audit_log(list(snapshot.entries), list(snapshot.checkpoints), authority=authority)
    assert report.consistent, report.problem
    assert page.errors == []
    page.close()


async def _status(url: str, token: str, method: str, path: str, stack: dict[str, Any]) -> int:
    async with (
        aiohttp.ClientSession(connector=trusting(stack)) as session,
        session.request(method, url + path, headers={"Authorization": f"Bearer {token}"}) as response,
    ):
        return response.status


def test_auditor_token_is_read_only_and_operator_views_are_closed_to_it(network):
    """An auditor cannot re-drive, discard or see the operator's overview; a reader token cannot use the console."""
    url, gateway = network["gateway"]["url"], network["gateway"]
    auditor, reader = gateway["auditor_token"], gateway["reader_token"]
    assert _run(_status(url, auditor, "POST", "/v1/ops/dead-letters/1/redrive", network)) == 403
    assert _run(_status(url, auditor, "POST", "/v1/ops/dead-letters/1/discard", network)) == 403
    assert _run(_status(url, auditor, "GET", "/v1/console/overview", network)) == 403
    assert _run(_status(url, auditor, "GET", "/v1/console/track?case_id=X", network)) == 200
    assert _run(_status(url, reader, "GET", "/v1/console/track?case_id=X", network)) == 403
    assert _run(_status(url, "wrong", "GET", "/v1/console/whoami", network)) == 401


async def _text(url: str, token: str | None = None, stack: dict[str, Any] | None = None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    connector = trusting(stack or {})
    async with aiohttp.ClientSession(connector=connector) as session, session.get(url, headers=headers) as response:
        return response.status, await response.text()


def test_gateway_and_agents_serve_prometheus_metrics_of_real_traffic(network):
    """After an exchange of its own, the gateway's `/metrics` counts relayed messages and forwarded evidence and
    shows queue depths (scraped with the metrics token, refused without); an agent's `/metrics` (behind its
    token) counts what it received."""
    _run(_send(network, _fresh_request(), {"delivered", "retrieved"}))
    gateway_metrics = network["gateway"]["url"] + "/metrics"
    assert _run(_text(gateway_metrics, stack=network))[0] == 401
    status, text = _run(_text(gateway_metrics, network["gateway"]["metrics_token"], stack=network))
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(text)}
    relayed = [s for s in families["rogatory_gateway_messages"].samples if s.labels.get("result") == "relayed"]
    assert relayed, "relayed messages are counted"
    assert relayed[0].value >= 1
    assert any(s.labels.get("queue") == f"mla.inbox.{LY}" for s in families["rogatory_queue_messages"].samples)
    assert families["rogatory_gateway_checkpoint_age_seconds"].samples[0].value >= 0
    ly = network["agents"][LY]
    assert _run(_text(ly["url"] + "/metrics"))[0] == 401
    status, text = _run(_text(ly["url"] + "/metrics", ly["token"]))
    assert status == 200
    delivered = [
        s
        for f in text_string_to_metric_families(text)
        if f.name == "rogatory_agent_deliveries"
        for s in f.samples
        if s.name.endswith("_total") and s.labels == {"kind": "message", "result": "delivered"}
    ]
    assert delivered, "messages delivered to LY-MLA-CA are counted"
    assert delivered[0].value >= 1
