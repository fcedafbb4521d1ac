"""Two agents in this process, each on a real SQLite store, joined by an in-memory wire instead of broker and gateway.

The wire does what the broker and the gateway would for these tests: it takes
what one agent queued to the other agent's receiver, marks it published, and
carries the evidence the receiver issued back to the sender. Nothing of the
agents is faked: their API, store, case book and receiver are the real ones.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import test_utils

from agents.api import AgentApi, ApiContext
from agents.auditing import SenderViews
from agents.cases import CaseBook
from agents.connectivity import Connectivity
from agents.guard import ApiGuard, parse_token_specs
from agents.receiving import Received, Receiver, ReceiverKeys
from agents.store import AgentStore
from agents.submission import SenderKeys
from agents.webhooks import AddressPolicy, DeliveryPolicy, WebhookDispatcher, Webhooks
from protocol.directory import Directory
from protocol.encoding import format_timestamp
from protocol.ids import AgencyId
from protocol.limits import DEFAULT_LIMITS
from protocol.storage import StorageKey
from runtime.tls import client_context
from tests.support.network import NOW, AgencyKeys, LocalNetwork

TOKEN = "agent-test-token"
GATEWAY_USER = "gateway"


@dataclass
class InProcessAgent:
    """One agency's agent: API (over a test HTTP server), store, case book, receiver."""

    agency: AgencyId
    keys: AgencyKeys
    directory: Directory
    store: AgentStore
    cases: CaseBook
    receiver: Receiver
    http: test_utils.TestClient[Any, Any]
    webhooks: Webhooks | None = None

    async def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        """One API call: (status, JSON answer)."""
        data = body if body is None or isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
        sent_headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"} | (headers or {})
        async with self.http.request(method, path, data=data, headers=sent_headers) as response:
            return response.status, await response.json(content_type=None)

    async def submit(self, document: Any, *, idempotency_key: str | None = None) -> tuple[int, dict[str, Any]]:
        """`POST /v1/messages`."""
        headers = {} if idempotency_key is None else {"Idempotency-Key": idempotency_key}
        status, answer = await self.call("POST", "/v1/messages", document, headers)
        return status, answer

    async def case(self, case_id: str) -> dict[str, Any]:
        """`GET /v1/cases/{case_id}`, which must answer 200."""
        status, answer = await self.call("GET", f"/v1/cases/{case_id}")
        assert status == 200, answer
        found: dict[str, Any] = answer
        return found

    async def message(self, message_id: str) -> dict[str, Any]:
        """`GET /v1/messages/{id}`, which must answer 200."""
        status, answer = await self.call("GET", f"/v1/messages/{message_id}")
        assert status == 200, answer
        found: dict[str, Any] = answer
        return found

    async def ack(self, message_id: str) -> None:
        """`POST /v1/inbox/{id}/ack`, which must answer 200."""
        status, answer = await self.call("POST", f"/v1/inbox/{message_id}/ack")
        assert status == 200, answer

    async def close(self) -> None:
        """Stop the HTTP server (and the webhook client), close the store."""
        await self.http.close()
        if self.webhooks is not None:
            await self.webhooks.dispatcher.close()
        await self.store.close()


async def start_agent(
    net: LocalNetwork,
    directory: Directory,
    agency: AgencyId,
    data_dir: Path,
    *,
    in_force: Callable[[], Directory] | None = None,
    clock: Callable[[], datetime] = lambda: NOW,
    sender_views: SenderViews | None = None,
    health: Callable[[], dict[str, Any]] = lambda: {"status": "ok"},
    tokens: tuple[str, ...] = (),
    webhooks: tuple[DeliveryPolicy, AddressPolicy] | None = None,
    storage_key: StorageKey | None = None,
) -> InProcessAgent:
    """An agent for `agency` of `net`, its clock stopped at `NOW` (or `clock`), on `directory` (or `in_force`);
    senders' log views go to `sender_views`; `/healthz` answers `health`. `tokens` are extra token entries
    (`agents.guard`) besides `TOKEN`'s; `webhooks` serves `/v1/subscriptions` and makes a dispatcher (not run:
    the test calls its `tick`; its clock moves on from the agent's); `storage_key` reopens a store made before."""
    keys = net[agency]
    current = in_force or (lambda: directory)
    store = await AgentStore.open(
        data_dir / f"{agency}.db", synchronous="NORMAL", storage_key=storage_key or StorageKey.generate()
    )
    cases = CaseBook(agency)
    sender = SenderKeys(agency=agency, signing_key=keys.signing, archive_key=keys.encryption.public_key)
    links = Connectivity(
        sender=sender, store=store, directory=current, limits=DEFAULT_LIMITS, clock=clock, wake_relay=lambda: None
    )
    receiver = Receiver(
        keys=ReceiverKeys(agency=agency, signing_key=keys.signing, encryption_keys=keys.decryption_keys),
        directory=current,
        store=store,
        gateway_broker_user=GATEWAY_USER,
        limits=DEFAULT_LIMITS,
        clock=clock,
        cases=cases,
        on_opened=None,
        on_log_view=None if sender_views is None else sender_views.offer,
        on_probe=links.receive,
    )
    token_entries = (hashlib.sha256(TOKEN.encode()).hexdigest(), *tokens)
    guard = ApiGuard(parse_token_specs(token_entries), clock=time.monotonic)
    hooks = None
    if webhooks is not None:
        delivery, addresses = webhooks
        started = time.monotonic()

        def moving() -> datetime:
            """The agent's clock, moving on from its instant as time passes: backoff ends."""
            return clock() + timedelta(seconds=time.monotonic() - started)

        dispatcher = WebhookDispatcher(
            store=store,
            owner=guard.holder,
            clock=moving,
            policy=delivery,
            addresses=addresses,
            tls=client_context(None),
            cases=cases,
        )
        hooks = Webhooks(store=store, dispatcher=dispatcher, addresses=addresses, policy=delivery, clock=clock)
    context = ApiContext(
        agency=agency,
        sender=sender,
        store=store,
        directory=current,
        limits=DEFAULT_LIMITS,
        message_ttl=timedelta(days=1),
        token_hashes=token_entries,
        clock=clock,
        wake_relay=lambda: None,
        health=health,
        cases=cases,
        guard=guard,
        webhooks=hooks,
        connectivity=links,
    )
    http: test_utils.TestClient[Any, Any] = test_utils.TestClient(test_utils.TestServer(AgentApi(context).app()))
    await http.start_server()
    return InProcessAgent(
        agency=agency,
        keys=keys,
        directory=directory,
        store=store,
        cases=cases,
        receiver=receiver,
        http=http,
        webhooks=hooks,
    )


async def carry(sender: InProcessAgent, recipient: InProcessAgent) -> list[Received]:
    """Deliver what `sender` queued to `recipient`, then bring `recipient`'s evidence back to `sender`."""
    received = []
    for record in await sender.store.queued():
        received.append(await recipient.receiver.receive_message(record.sealed))
        async with sender.store.transaction() as tx:
            await tx.mark_published(record.message_id, format_timestamp(NOW))
    await return_evidence(recipient, sender)
    return received


async def return_evidence(issuer: InProcessAgent, to: InProcessAgent) -> None:
    """Bring the evidence `issuer` signed (DELIVERY, NON_DELIVERY, RETRIEVAL) to the sender it concerns."""
    pending = await issuer.store.pending_evidence()
    for item in pending:
        await to.receiver.receive_evidence(item.body)
    async with issuer.store.transaction() as tx:
        await tx.delete_pending_evidence([item.evidence_out_id for item in pending])
