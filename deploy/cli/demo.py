"""`rogatory demo`: one MLA exchange between Bangladesh and Libya, on a fresh local network.

The Public Security Division of Bangladesh's Ministry of Home Affairs
(`BD-MOHA-PSD`, the central authority) sends the request of case
BD-LY-2025-0007 (trafficking for forced labour, fictional) to Libya's central
authority (`LY-MLA-CA`). Libya's case system reads it and takes it, then
answers with the case's acknowledgement. The demo prints each step, both
evidence chains with every signature checked against the directory, and the
audit log's verdict; it exits non-zero if any step failed.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from deploy.cli.auditor import describe, fetch_snapshot, verify_snapshot
from deploy.client.agent_api import AgentApiError, AgentClient, InboxMessage, MessageStatus, document_of, poll
from deploy.client.samples import ACKNOWLEDGEMENT_SAMPLE, REQUEST_SAMPLE, REQUESTED, REQUESTING, sample
from deploy.localnet.devstack import DevStackError, destroy, down, gateway_ca, trusting, up
from deploy.provision.broker import BrokerAdminError
from protocol.auditlog import encode_leaf, evidence_leaf
from protocol.checkpoint import verify_checkpoint
from protocol.directory import NOTHING_HELD, Directory, verify_directory
from protocol.encoding import b64decode, canonical_json
from protocol.errors import ErrorCode, ProtocolError
from protocol.evidence import verify_evidence
from protocol.keys import SigningPublicKey
from protocol.limits import DEFAULT_LIMITS
from protocol.merkle import leaf_hash, verify_inclusion
from protocol.signing import SignedStatement


class DemoFailed(Exception):
    """A step of the demo did not happen as it should."""


class Demo:
    """The exchange, step by step, printing as it goes."""

    def __init__(self, stack: dict[str, Any], session: aiohttp.ClientSession, say: Callable[[str], None]) -> None:
        self.stack = stack
        self.session = session
        self.say = say
        agents = stack["agents"]
        self.bd = AgentClient(session, agents[REQUESTING]["url"], agents[REQUESTING]["token"])
        self.ly = AgentClient(session, agents[REQUESTED]["url"], agents[REQUESTED]["token"])
        network = stack["network"]
        signed = SignedStatement.from_json(
            Path(network["directory_file"]).read_bytes(), code=ErrorCode.MALFORMED_DIRECTORY
        )
        self.authority_key = network["authority_key"]
        self.directory: Directory = verify_directory(
            signed,
            SigningPublicKey(b64decode(self.authority_key)),
            now=datetime.now(UTC),
            held_version=NOTHING_HELD,
            limits=DEFAULT_LIMITS,
        )

    async def run(self) -> None:
        request = sample(REQUEST_SAMPLE)
        self.say(f"\n[1] {REQUESTING} submits the MLA_REQUEST of case {request['case_id']} to {REQUESTED}")
        accepted = await self.bd.submit(request, idempotency_key="demo-request-0007")
        request_id = accepted["message_id"]
        self.say(f"    accepted: message {request_id}, status {accepted['status']}")

        self.say(f"[2] the gateway verifies, logs and relays it; {REQUESTED}'s agent verifies, decrypts, stores it")
        status = await self.bd.wait_for_status(request_id, {"delivered", "retrieved", "rejected", "failed"})
        self._expect(status["status"] in {"delivered", "retrieved"}, f"request ended as {status['status']}")
        self.say(f"    status at the sender: {status['status']}")

        received = await self.ly.wait_for_inbox(request_id)
        self._check_identical(request, received)
        payload = document_of(received)["payload"]
        self.say(f"[3] {REQUESTED}'s case system reads its inbox: {received['message_type']} from {received['sender']}")
        self.say(
            f"    {len(canonical_json(document_of(received)))} bytes, identical to what was sent "
            f"(document sha256 {str(received.get('document_sha256'))[:16]}...)"
        )
        items = ", ".join(item["type"] for item in payload["assistance_requested"])
        self.say(f"    assistance requested ({len(payload['assistance_requested'])} items): {items}")
        arabic = payload["assistance_requested"][0]["description"].get("translations", {}).get("ar")
        if arabic:
            self.say(f"    item A1 in Arabic, as written by the sender: {arabic[:70]}...")
        self.say(f"    addressed to: {payload['addressed_to']['name']['value']}")

        await self.ly.ack(request_id)
        self.say(f"[4] {REQUESTED} takes it into its case system (RETRIEVAL evidence, signed by {REQUESTED})")
        await self.bd.wait_for_status(request_id, {"retrieved"})

        acknowledgement = sample(ACKNOWLEDGEMENT_SAMPLE)
        self.say(f"[5] {REQUESTED} answers with the case's ACKNOWLEDGEMENT (in reply to {request_id})")
        answer = await self.ly.submit(acknowledgement, idempotency_key="demo-ack-0007")
        ack_id = answer["message_id"]
        received_ack = await self.bd.wait_for_inbox(ack_id)
        self._check_identical(acknowledgement, received_ack)
        note = document_of(received_ack)["payload"]["note"]
        self.say(f"    {REQUESTING} received it; note ({note['lang']}): {note['value']}")
        await self.bd.ack(ack_id)
        await self.ly.wait_for_status(ack_id, {"retrieved"})
        self.say(f"[6] {REQUESTING} takes the acknowledgement (RETRIEVAL evidence)")

        self.say("")
        await self._evidence_chain(self.bd, request_id, f"Evidence chain of the request, held by {REQUESTING}")
        await self._evidence_chain(self.ly, ack_id, f"Evidence chain of the acknowledgement, held by {REQUESTED}")
        await self._audit()

    def _expect(self, condition: bool, problem: str) -> None:
        if not condition:
            raise DemoFailed(problem)

    def _check_identical(self, sent: dict[str, Any], received: InboxMessage) -> None:
        """Every field the sender wrote arrives unchanged (the agent only adds what was absent)."""
        document = dict(document_of(received))
        integrity = document.get("integrity")
        if isinstance(integrity, dict) and "signature" not in (sent.get("integrity") or {}):
            # the document's own signature, added by the sending agent (protocol.document_signature)
            document["integrity"] = {key: value for key, value in integrity.items() if key != "signature"}
        changed = [key for key, value in sent.items() if document.get(key) != value]
        self._expect(not changed, f"fields changed in transit: {changed}")

    async def _evidence_chain(self, client: AgentClient, message_id: str, title: str) -> None:
        answer = await poll(
            lambda: self._with_all_proofs(client, message_id), within_s=30, what=f"inclusion proofs of {message_id}"
        )
        self.say(f"{title} (message {message_id}, status {answer['status']}):")
        for item in answer["evidence"]:
            signed = SignedStatement.model_validate(item["statement"])
            try:
                verified = verify_evidence(signed, self.directory, now=datetime.now(UTC))
                proof = item["inclusion_proof"]
                if proof is None:
                    raise DemoFailed(f"evidence {item['type']} has no inclusion proof")
                checkpoint = verify_checkpoint(
                    proof["checkpoint"],
                    self.directory.gateway.log_origin,
                    self.directory.gateway.log_keys[0].verifier,
                    origin=self.directory.gateway.log_origin,
                )
                leaf = leaf_hash(encode_leaf(evidence_leaf(signed, verified.statement)))
                verify_inclusion(
                    leaf,
                    proof["leaf_index"],
                    checkpoint.size,
                    [b64decode(node) for node in proof["proof"]],
                    checkpoint.root_hash,
                )
            except ProtocolError as exc:
                raise DemoFailed(f"evidence {item['type']} does not verify: {exc}") from exc
            self.say(
                f"    {item['at']}  {item['type']:<20} signed by {item['signed_by']:<38} signature ok, "
                f"in the audit log at #{proof['leaf_index']} (proof to checkpoint {checkpoint.size} ok)"
            )
        types = [item["type"] for item in answer["evidence"]]
        for wanted in ("SUBMISSION_ACCEPTED", "RELAY_ACCEPTED", "DELIVERY", "RETRIEVAL"):
            self._expect(wanted in types, f"{wanted} is missing from the chain of {message_id}")

    @staticmethod
    async def _with_all_proofs(client: AgentClient, message_id: str) -> MessageStatus | None:
        """The message's status once every piece of its evidence carries an inclusion proof."""
        answer = await client.message(message_id)
        complete = len(answer["evidence"]) >= 4 and all(item["inclusion_proof"] for item in answer["evidence"])
        return answer if complete else None

    async def _tree_size(self) -> int:
        gateway = self.stack["gateway"]
        async with self.session.get(f"{gateway['url']}/healthz") as response:
            return int((await response.json())["tree_size"])

    async def _audit(self) -> None:
        gateway = self.stack["gateway"]
        started = time.monotonic()
        while True:
            snapshot = await fetch_snapshot(gateway["url"], gateway["auditor_token"], ca_file=gateway_ca(self.stack))
            report = verify_snapshot(snapshot, self.authority_key)
            tree_size = await self._tree_size()
            covered = report.latest is not None and report.latest.size == tree_size
            if (covered and report.published_size == tree_size) or not report.consistent:
                break
            if time.monotonic() - started > 20:
                break
            await asyncio.sleep(0.5)
        self.say("\nAudit log (rogatory audit verify):")
        for line in describe(report):
            self.say("    " + line)
        self._expect(report.consistent, "the audit log does not verify")


def run_demo(
    *, amqp_url: str, management_url: str | None, state_dir: Path | None, keep: bool, say: Callable[[str], None] = print
) -> int:
    """Run the demo; 0 if every step happened as it should."""
    temporary = state_dir is None
    root = Path(tempfile.mkdtemp(prefix="rogatory-demo-")) if state_dir is None else state_dir
    say("Rogatory demo: a mutual legal assistance request from Bangladesh to Libya")
    say("(fictional case data; every message is signed, end-to-end encrypted and audited)\n")
    status = 1
    started = False
    try:
        stack = asyncio.run(up(root, amqp_url=amqp_url, management_url=management_url, say=say))
        started = True

        async def exchange() -> None:
            timeout = aiohttp.ClientTimeout(total=30)
            async with aiohttp.ClientSession(timeout=timeout, connector=trusting(stack)) as session:
                await Demo(stack, session, say).run()

        asyncio.run(exchange())
        say(
            "\nDemo succeeded: the request and its acknowledgement were delivered and retrieved, with signed "
            "evidence of every step and a consistent audit log."
        )
        status = 0
    except (DemoFailed, DevStackError, BrokerAdminError, AgentApiError, TimeoutError, OSError) as exc:
        say(f"\nDemo FAILED: {exc}")
    finally:
        if started and not keep:
            say("")
            down(root, say=say)
        if keep:
            say(f"network left running; state in {root} (stop it with: rogatory dev down --state-dir {root})")
        elif temporary and status == 0:
            asyncio.run(destroy(root, amqp_url=amqp_url, management_url=management_url))
        elif status != 0:
            say(f"logs kept in {root}")
    return status


__all__ = ["run_demo", "sample"]
