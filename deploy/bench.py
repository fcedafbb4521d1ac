"""`rogatory bench`: the whole path measured beside the raw broker, in one run.

Whole path: `BD-MOHA-PSD`'s agency system submits N documents of about 2 KB
(`POST /v1/messages`); each is validated, sealed, stored, published, verified
and logged by the gateway, relayed, verified, decrypted and stored by
`LY-MLA-CA`'s agent, whose signed `DELIVERY` evidence travels back through
the gateway to the sender. Latency is from the sender agent's acceptance of
the submission to its receipt of the `DELIVERY` evidence (both stamped by the
sender's agent, one clock).

Baseline: on the same broker, in the same run, N persistent messages of the
same size through one quorum queue with publisher confirms and manual acks
(aio-pika), the single hop every exchange pays at least.

The figures are printed (and written as JSON with `--json`); nothing here
fails on a number.
"""

from __future__ import annotations

import asyncio
import copy
import json
import secrets
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import aio_pika
import aiohttp

from deploy.broker import ManagementClient, management_url_from_amqp
from deploy.client import AgentClient
from deploy.demo import REQUEST_SAMPLE, REQUESTING, sample
from deploy.devstack import destroy, down, up
from protocol.encoding import canonical_json

CONCURRENCY: Final = 32
"""Submissions in flight at once from the benchmark's client."""
TARGET_CONTENT_BYTES: Final = 2000
"""Bytes of free text in each benchmark message: "about 2 KB of content"."""


@dataclass(frozen=True, slots=True)
class BenchFigures:
    """What one run measured."""

    messages: int
    document_bytes: int
    sealed_bytes: int
    whole_path_per_s: float
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    raw_broker_per_s: float
    ratio: float


NOTE_TEXT: Final = (
    "Further to our request, the investigating officer reports that the second victim has been located in "
    "Tripoli and is willing to give evidence by video link. "
    "أفاد ضابط التحقيق بأن الضحية الثانية موجودة في طرابلس ومستعدة للإدلاء بشهادتها عبر الفيديو. "
    "তদন্তকারী কর্মকর্তা জানিয়েছেন যে দ্বিতীয় ভুক্তভোগীকে ত্রিপোলিতে পাওয়া গেছে। "
)


def bench_note(request: dict[str, Any], case_id: str, index: int) -> dict[str, Any]:
    """A NOTE of about 2 KB of content in `case_id`, in English, Arabic and Bengali."""
    text = NOTE_TEXT * (1 + TARGET_CONTENT_BYTES // len(NOTE_TEXT.encode()))
    while len(text.encode()) > TARGET_CONTENT_BYTES:
        text = text[:-1]
    return {
        "schema": request["schema"],
        "test_data": True,
        "message_type": "NOTE",
        "case_id": case_id,
        "sender": request["sender"],
        "recipient": request["recipient"],
        "channel": request["channel"],
        "classification": request["classification"],
        "languages": {"primary": "en", "available": ["en", "ar", "bn"]},
        "requesting_ref": f"{request['requesting_ref']}/{index}",
        "payload": {"text": {"lang": "en", "value": text}},
    }


def bench_case(request: dict[str, Any], case_id: str) -> dict[str, Any]:
    """The request that opens the benchmark's case (its notes need a case to belong to)."""
    opener = copy.deepcopy(request)
    for field_name in ("message_id", "integrity"):
        opener.pop(field_name, None)
    opener["case_id"] = case_id
    return opener


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def _whole_path(stack: dict[str, Any], count: int, say: Callable[[str], None]) -> tuple[float, list[float], int]:
    request = sample(REQUEST_SAMPLE)
    case_id = f"BENCH-{secrets.token_hex(3).upper()}"
    agents = stack["agents"]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        sender = AgentClient(session, agents[REQUESTING]["url"], agents[REQUESTING]["token"])
        documents = [bench_note(request, case_id, i) for i in range(count)]
        # The case's request first; it also warms connections, caches and the first quorum-queue writes.
        opener = await sender.submit(bench_case(request, case_id))
        await sender.wait_for_status(opener["message_id"], {"delivered", "retrieved"}, within_s=60)
        say(f"  submitting {count} messages of ~{len(canonical_json(documents[0]))} bytes, {CONCURRENCY} at a time")
        gate = asyncio.Semaphore(CONCURRENCY)
        message_ids: list[str] = []

        async def submit(document: dict[str, Any]) -> None:
            async with gate:
                answer = await sender.submit(document)
                message_ids.append(answer["message_id"])

        started = time.perf_counter()
        await asyncio.gather(*(submit(document) for document in documents))
        latencies: list[float] = []
        pending = list(message_ids)
        deadline = time.monotonic() + max(60.0, count / 10)
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(pending)} messages were not delivered in time")
            still: list[str] = []
            for message_id in pending:
                answer = await sender.message(message_id)
                delivery = next((e for e in answer["evidence"] if e["type"] == "DELIVERY"), None)
                if delivery is None:
                    still.append(message_id)
                    continue
                submitted_at = datetime.fromisoformat(answer["created_at"])
                received_at = datetime.fromisoformat(delivery["received_at"])
                latencies.append((received_at - submitted_at).total_seconds() * 1000)
            pending = still
            if pending:
                await asyncio.sleep(0.2)
        elapsed = time.perf_counter() - started
        first = await sender.message(message_ids[0])
        sealed_bytes = int(first.get("sealed_bytes", 0))
    return count / elapsed, latencies, sealed_bytes


async def _raw_broker(amqp_url: str, management_url: str | None, count: int, size: int) -> float:
    """Persistent, confirmed, manually acked messages through one quorum queue."""
    vhost = f"rogatory-bench-raw-{secrets.token_hex(4)}"
    endpoint = management_url_from_amqp(amqp_url, base_url=management_url)
    async with ManagementClient.from_endpoint(endpoint) as admin:
        await admin.put_json(("vhosts", vhost), {}, action="create the baseline vhost")
        await admin.put_json(
            ("permissions", vhost, endpoint.username),
            {"configure": ".*", "write": ".*", "read": ".*"},
            action="grant the baseline vhost",
        )
        try:
            # One connection to publish and one to consume, as the services do.
            publisher_connection = await aio_pika.connect(_with_vhost(amqp_url, vhost))
            consumer_connection = await aio_pika.connect(_with_vhost(amqp_url, vhost))
            try:
                return await _raw_rate(publisher_connection, consumer_connection, count, size)
            finally:
                await publisher_connection.close()
                await consumer_connection.close()
        finally:
            await admin.delete(("vhosts", vhost), action="delete the baseline vhost", missing_ok=True)


def _with_vhost(amqp_url: str, vhost: str) -> str:
    scheme, rest = amqp_url.split("://", 1)
    authority = rest.split("/", 1)[0]
    return f"{scheme}://{authority}/{vhost}"


async def _raw_rate(
    publisher_connection: aio_pika.abc.AbstractConnection,
    consumer_connection: aio_pika.abc.AbstractConnection,
    count: int,
    size: int,
) -> float:
    publish_channel = await publisher_connection.channel(publisher_confirms=True)
    queue = await publish_channel.declare_queue("bench.raw", durable=True, arguments={"x-queue-type": "quorum"})
    consume_channel = await consumer_connection.channel()
    await consume_channel.set_qos(prefetch_count=CONCURRENCY)
    consume_queue = await consume_channel.get_queue("bench.raw", ensure=False)
    body = secrets.token_bytes(size)
    received = 0
    finished = asyncio.Event()

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        nonlocal received
        await message.ack()
        received += 1
        if received == count:
            finished.set()

    await consume_queue.consume(on_message)
    gate = asyncio.Semaphore(CONCURRENCY)

    async def publish() -> None:
        async with gate:
            await publish_channel.default_exchange.publish(
                aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, message_id=str(uuid.uuid4())),
                routing_key=queue.name,
            )

    started = time.perf_counter()
    await asyncio.gather(*(publish() for _ in range(count)))
    await asyncio.wait_for(finished.wait(), timeout=max(60.0, count / 10))
    return count / (time.perf_counter() - started)


def run_bench(
    *,
    amqp_url: str,
    management_url: str | None,
    messages: int,
    state_dir: Path | None,
    json_out: Path | None,
    say: Callable[[str], None] = print,
) -> int:
    """Run the benchmark and print its figures; 0 unless something broke (never because of a number)."""
    root = state_dir or Path(tempfile.mkdtemp(prefix="rogatory-bench-"))
    say(f"Rogatory bench: {messages} messages, whole path vs. raw broker")
    stack = asyncio.run(up(root, amqp_url=amqp_url, management_url=management_url, say=lambda _: None))
    try:
        rate, latencies, sealed_bytes = asyncio.run(_whole_path(stack, messages, say))
    finally:
        down(root, say=lambda _: None)
        if state_dir is None:
            asyncio.run(destroy(root, amqp_url=amqp_url, management_url=management_url))
    document_bytes = len(canonical_json(bench_note(sample(REQUEST_SAMPLE), "BENCH-0", 0)))
    raw = asyncio.run(_raw_broker(amqp_url, management_url, messages, sealed_bytes or document_bytes + 1500))
    figures = BenchFigures(
        messages=messages,
        document_bytes=document_bytes,
        sealed_bytes=sealed_bytes,
        whole_path_per_s=round(rate, 1),
        latency_p50_ms=round(_percentile(latencies, 0.50), 1),
        latency_p95_ms=round(_percentile(latencies, 0.95), 1),
        latency_p99_ms=round(_percentile(latencies, 0.99), 1),
        latency_max_ms=round(max(latencies), 1),
        raw_broker_per_s=round(raw, 1),
        ratio=round(rate / raw, 3),
    )
    say(
        f"  whole path:  {figures.whole_path_per_s:>8.1f} messages/s  "
        f"(submit -> DELIVERY evidence at the sender, document {document_bytes} B, sealed {sealed_bytes} B)"
    )
    say(
        f"  latency:     p50 {figures.latency_p50_ms} ms, p95 {figures.latency_p95_ms} ms, "
        f"p99 {figures.latency_p99_ms} ms, max {figures.latency_max_ms} ms  (mean "
        f"{statistics.fmean(latencies):.1f} ms)"
    )
    say(
        f"  raw broker:  {figures.raw_broker_per_s:>8.1f} messages/s  "
        "(aio-pika, persistent, confirmed, acked, one quorum queue, same broker, same run)"
    )
    say(f"  ratio:       {figures.ratio:.3f} of the raw single-hop rate")
    if json_out is not None:
        json_out.write_text(json.dumps(asdict(figures), indent=2) + "\n")
        say(f"  figures written to {json_out}")
    return 0


__all__ = ["BenchFigures", "bench_case", "bench_note", "run_bench"]
