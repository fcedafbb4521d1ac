"""What operators see of the gateway: Prometheus metrics, the canonical log line, the console's alerts
and files, and a sample alert rules file that refers only to metrics that exist."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
import structlog
import yaml
from aiohttp.test_utils import make_mocked_request
from prometheus_client.parser import text_string_to_metric_families

from agents.metrics import METRIC_NAMES as AGENT_METRIC_NAMES
from agents.metrics import AgentMetrics
from gateway.console_api import (
    AlertThresholds,
    ConsoleApi,
    QueueHistory,
    _key_alerts,
    _log_alerts,
    _queue_alerts,
    _witness_failing,
)
from gateway.metrics import METRIC_NAMES, GatewayMetrics
from gateway.pipeline import IngressDelivery, Outcome, OutcomeKind, OutcomeResult
from gateway.store import GatewayStore, MessageRecord, MessageState
from protocol.encoding import format_timestamp
from runtime.logs import CANONICAL_EVENT, CANONICAL_FIELDS
from tests.support.network import NOW, LocalNetwork

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rogatory-alerts.yml"
SENDER, RECIPIENT, MESSAGE_ID = "BD-MOHA-PSD", "LY-MLA-CA", "0b6b3b4e-9f57-4a53-9d1e-3a8f4f0d2c11"


@pytest.fixture
async def store(tmp_path):
    opened = await GatewayStore.open(tmp_path / "gateway.db")
    try:
        yield opened
    finally:
        await opened.close()


async def _accepted(store: GatewayStore) -> None:
    async with store.transaction() as tx:
        await tx.insert_message(
            MessageRecord(
                sender=SENDER,
                message_id=MESSAGE_ID,
                digest="ab" * 32,
                message_type="MLA_REQUEST",
                case_id="BD-LY-2025-0007",
                recipients=(RECIPIENT,),
                created_at=format_timestamp(NOW),
                expires_at=format_timestamp(NOW + timedelta(days=1)),
                state=MessageState.RELAYED,
                received_at=format_timestamp(NOW - timedelta(seconds=3)),
            )
        )


def _exported(*registries_text: bytes) -> set[str]:
    """Every series name a scrape can hold, from the exposition's families."""
    names: set[str] = set()
    for text in registries_text:
        for family in text_string_to_metric_families(text.decode()):
            names.add(family.name)
            if family.type == "counter":
                names.add(family.name + "_total")
            if family.type == "histogram":
                names |= {family.name + suffix for suffix in ("_bucket", "_sum", "_count")}
    return names


def test_alert_rules_parse_and_use_only_exported_metrics():
    """The sample rules file is valid YAML of Prometheus rule groups, every rule has a severity, and every
    `rogatory_*` metric it names is one the gateway or an agent exports."""
    document = yaml.safe_load(RULES.read_text())
    rules = [rule for group in document["groups"] for rule in group["rules"]]
    assert len(rules) >= 10
    exported = _exported(GatewayMetrics().render(), AgentMetrics().render())
    referenced: set[str] = set()
    for rule in rules:
        assert set(rule) >= {"alert", "expr", "labels", "annotations"}, rule
        assert rule["labels"]["severity"] in {"warning", "critical"}
        referenced |= set(re.findall(r"\brogatory_[a-z_]+\b", rule["expr"]))
    assert referenced, "the rules watch Rogatory's metrics"
    assert referenced <= exported, f"not exported: {sorted(referenced - exported)}"
    codes = {rule["alert"] for rule in rules}
    for needed in (
        "InboxWithoutConsumer",
        "QueueKeepsGrowing",
        "DeadLettersHeld",
        "CheckpointStale",
        "WitnessFailing",
        "KeyExpiresSoon",
    ):
        assert f"Rogatory{needed}" in codes


def test_documented_metric_names_are_the_exported_ones():
    """`METRIC_NAMES` of each service lists exactly the families it exports (docs and rules rely on them)."""
    for metrics, names in ((GatewayMetrics(), METRIC_NAMES), (AgentMetrics(), AGENT_METRIC_NAMES)):
        families = _exported(metrics.render())
        assert names <= families, sorted(names - families)
        prefixes = {
            name
            for name in families
            if name.startswith("rogatory_") and not name.endswith(("_bucket", "_sum", "_count", "_created"))
        }
        assert {n.removesuffix("_total") for n in names} >= {p.removesuffix("_total") for p in prefixes}


async def test_each_delivery_is_counted_timed_and_logged_in_one_canonical_line(store):
    """The wrapped ingress handler counts the outcome by kind and result, the error code, the stage time,
    the delay to a recipient's evidence, and writes one `message_processed` line with the four ids."""
    await _accepted(store)
    metrics = GatewayMetrics()
    outcomes = iter(
        [
            Outcome(kind=OutcomeKind.EVIDENCE, result=OutcomeResult.FORWARDED, message_id=MESSAGE_ID, sender=SENDER),
            Outcome(kind=OutcomeKind.MESSAGE, result=OutcomeResult.REJECTED, code="REPLAYED", sender=SENDER),
        ]
    )

    async def handle(_delivery: IngressDelivery) -> Outcome:
        return next(outcomes)

    measured = metrics.measured_handler(handle, store, lambda: NOW)
    delivery = IngressDelivery(body=b"{}", kind="k", user_id="net.BD-MOHA-PSD", amqp_message_id=None)
    with structlog.testing.capture_logs() as lines:
        await measured(delivery)
        await measured(delivery)
    value = metrics.registry.get_sample_value
    assert value("rogatory_gateway_messages_total", {"kind": "evidence", "result": "forwarded"}) == 1
    assert value("rogatory_gateway_messages_total", {"kind": "message", "result": "rejected"}) == 1
    assert value("rogatory_gateway_errors_total", {"code": "REPLAYED"}) == 1
    assert value("rogatory_gateway_stage_seconds_count", {"stage": "ingress"}) == 2
    assert value("rogatory_gateway_evidence_delay_seconds_sum") == pytest.approx(3.0)
    canonical = [line for line in lines if line["event"] == CANONICAL_EVENT]
    assert len(canonical) == 2
    assert all(set(CANONICAL_FIELDS) <= set(line) for line in canonical)
    first = canonical[0]
    assert (first["message_id"], first["case_id"], first["sender"], first["recipient"]) == (
        MESSAGE_ID,
        "BD-LY-2025-0007",
        SENDER,
        RECIPIENT,
    )
    assert canonical[1]["code"] == "REPLAYED"
    assert canonical[1]["case_id"] is None


async def test_scrape_reads_log_keys_dead_letters_and_states(store):
    """At scrape time the gauges are read from the store and the directory: messages by type and state,
    checkpoint figures, dead letters held (present at zero), key and directory expiry, consumers."""
    await _accepted(store)
    directory = LocalNetwork().directory()
    metrics = GatewayMetrics()
    await metrics.refresh(
        store=store,
        tree_size=5,
        directory=directory,
        consumers={"ingress": True, "dead_letters": False},
        management=None,
        vhost="/",
        now=NOW,
    )
    value = metrics.registry.get_sample_value
    assert value("rogatory_gateway_message_states", {"type": "MLA_REQUEST", "state": "relayed"}) == 1
    assert value("rogatory_gateway_entries_awaiting_checkpoint") == 5
    assert value("rogatory_gateway_dead_letters", {"state": "held"}) == 0
    assert value("rogatory_gateway_consumer_up", {"consumer": "dead_letters"}) == 0
    assert value("rogatory_gateway_management_up") == 0
    agency = directory.agencies[0]
    key = agency.signing_keys[0]
    labels = {"owner": agency.agency_id, "use": "signing", "key_id": key.key_id}
    assert value("rogatory_key_expiry_timestamp_seconds", labels) == key.valid_until.timestamp()
    assert value("rogatory_directory_expiry_timestamp_seconds") == directory.expires_at.timestamp()


def test_two_gateways_in_one_process_do_not_share_counters():
    """Each gateway has a registry of its own (no process-wide default)."""
    first, second = GatewayMetrics(), GatewayMetrics()
    first.deliveries.labels("message", "relayed").inc()
    assert (
        second.registry.get_sample_value("rogatory_gateway_messages_total", {"kind": "message", "result": "relayed"})
        is None
    )


def test_a_queue_that_only_rises_over_the_window_keeps_growing():
    """Readings that rise or hold for the whole window, and rose, are a growing queue; a dip or too short a
    history is not."""
    history = QueueHistory(min_interval_s=5)
    for second, ready in ((0, 1), (10, 3), (20, 3), (30, 8), (40, 12), (61, 15)):
        history.add("mla.inbox.LY-MLA-CA", second, ready)
    assert history.growing("mla.inbox.LY-MLA-CA", window_s=60, min_samples=4)
    history.add("mla.inbox.LY-MLA-CA", 70, 2)
    assert not history.growing("mla.inbox.LY-MLA-CA", window_s=60, min_samples=4)
    short = QueueHistory(min_interval_s=5)
    for second, ready in ((0, 1), (10, 5), (20, 9)):
        short.add("q", second, ready)
    assert not short.growing("q", window_s=60, min_samples=4)


def test_alerts_name_each_trouble_an_operator_must_see():
    """An inbox nobody consumes, a growing queue, a stale checkpoint, a silent witness and a key about to
    expire each raise their alert; a healthy state raises none."""
    t = AlertThresholds()
    queues = [
        {"name": "mla.inbox.LY-MLA-CA", "consumers": 0, "messages_ready": 4, "growing": True},
        {"name": "mla.inbox.BD-MOHA-PSD", "consumers": 1, "messages_ready": 0, "growing": False},
    ]
    codes = [a["code"] for a in _queue_alerts(queues, t)]
    assert codes == ["inbox_without_consumer", "queue_growing"]
    assert _queue_alerts([queues[1]], t) == []
    stale = {"awaiting_checkpoint": 3, "checkpoint": {"age_s": 600.0}}
    assert [a["code"] for a in _log_alerts(stale, t)] == ["checkpoint_stale"]
    assert _log_alerts({"awaiting_checkpoint": 0, "checkpoint": {"age_s": 600.0}}, t) == []
    signed = format_timestamp(NOW - timedelta(seconds=30))
    assert _witness_failing(format_timestamp(NOW - timedelta(seconds=900)), signed, now=NOW, grace_s=120)
    assert _witness_failing(format_timestamp(NOW - timedelta(seconds=20)), signed, now=NOW, grace_s=120) is None
    directory = LocalNetwork().directory()
    soon = [
        {
            "agency_id": "LY-MLA-CA",
            "keys": [
                {
                    "key_id": "k1",
                    "use": "signing",
                    "valid_until": "2026-12-05T00:00:00.000Z",
                    "expires_in_s": 5 * 86400.0,
                }
            ],
        }
    ]
    assert [a["code"] for a in _key_alerts(soon, directory, t, NOW)] == ["key_expiring"]


def _console(store: GatewayStore) -> ConsoleApi:
    directory = LocalNetwork().directory()
    return ConsoleApi(
        store=store,
        tree_size=lambda: 0,
        directory=lambda: directory,
        health=lambda: {"status": "ok"},
        metrics=GatewayMetrics(),
        management=None,
        vhost="/",
        clock=lambda: NOW,
    )


async def test_console_files_are_served_with_a_strict_policy_and_no_path_escapes(store):
    """The page and its script come from the package with a same-origin-only policy; a name with a path
    or an unknown type is refused, so no other file of the gateway can be read."""
    console = _console(store)
    page = await console.index(make_mocked_request("GET", "/"))
    assert page.status == 200
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert b"/console/console.js" in page.body  # type: ignore[attr-defined]
    for name in ("console.js", "console.css"):
        answer = await console.asset(make_mocked_request("GET", f"/console/{name}", match_info={"asset": name}))
        assert answer.status == 200
    for name in ("../api.py", "..%2Fapi.py", "metrics.py", ".hidden.js", "index.html/.."):
        answer = await console.asset(make_mocked_request("GET", "/console/x", match_info={"asset": name}))
        assert answer.status == 404, name


def test_console_uses_no_remote_resource():
    """Nothing in the console is fetched from elsewhere: no URL with a scheme, no CDN."""
    console = Path(__file__).resolve().parents[2] / "gateway" / "console"
    for path in console.iterdir():
        text = path.read_text()
        assert not re.search(r"(?:src|href)\s*=\s*[\"']?(?:https?:)?//", text), path
        assert "import(" not in text, path
        assert "@import" not in text, path


CONSOLES_DOC = Path(__file__).resolve().parents[2] / "docs" / "CONSOLES.md"


def _documented_metrics() -> set[str]:
    """The metric names of the metrics table of docs/CONSOLES.md (its rows' first cells)."""
    section = CONSOLES_DOC.read_text(encoding="utf-8").split("## Metrics", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `rogatory_")]
    assert rows, "the metrics table of docs/CONSOLES.md was not found"
    return {name for row in rows for name in re.findall(r"`(rogatory_[a-z_]+)", row.split(" | ")[0])}


def test_every_metric_an_alert_rule_uses_or_a_service_exports_is_documented():
    """The operators' metrics table names every metric the alert rules watch and every family the gateway and
    the agents export; and it names none that is not exported."""
    rules = [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]
    watched = {  # a histogram's series (_bucket, _sum, _count) are documented by its family's name
        re.sub(r"_(bucket|sum|count)$", "", name)
        for rule in rules
        for name in re.findall(r"\brogatory_[a-z_]+\b", rule["expr"])
    }
    documented = _documented_metrics()
    exported = _exported(GatewayMetrics().render(), AgentMetrics().render())
    assert watched - documented == set(), "alert rules watch undocumented metrics"
    assert (METRIC_NAMES | AGENT_METRIC_NAMES) - documented == set(), "exported but undocumented"
    assert documented - exported == set(), "documented but not exported"
