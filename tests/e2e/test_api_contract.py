"""A live agent, and the live gateway, keep their own contract: fuzzed against the OpenAPI document each serves,
neither answers 5xx, every status answered is documented for its operation, and every answer matches its schema.

The agent is a real process of the session's `rogatory dev up` network; the
document is the one it serves at `/openapi.json`. schemathesis generates the
requests from the document, valid ones (positive) and ones that break it
(negative), a fixed number per operation, derandomised: the same requests on
every run, a few seconds in all.

The agent fuzzed is LY-AGO's, which no other test of the network reads or
writes. What fuzzing can change there is harmless: uploaded attachment bodies
(content-addressed, small), acknowledgements of random message ids (404), and
a submission only if a generated document were a valid message (it never is:
the content models reject it).
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.control import SkipTest
from schemathesis.core.result import Ok

pytestmark = [pytest.mark.e2e, pytest.mark.broker]

FUZZED_AGENCY = "LY-AGO"
AGENT_LEFT_OUT: frozenset[str] = frozenset({"createSubscription", "resumeSubscription", "startConnectivityTest"})
"""operationIds not fuzzed on the agent. An operation that would make the agent reach out to what a request
names (a webhook subscription's callback URL, a connectivity test's target) belongs here unless the agent
refuses every address but loopback: a fuzzer's URLs are arbitrary, and tests send traffic to loopback only.
A subscription's URL is resolved when it is made and called when it is resumed; a connectivity test sends a
ping through the shared network to a real agency. Their contract is checked by `tests/test_agent_client.py`."""
EXAMPLES_PER_OPERATION = 20
"""Per operation and per mode (positive, negative); one for an operation without inputs: about 370 requests,
a few seconds on an idle machine (under 30 s on a loaded one)."""
GATEWAY_EXAMPLES_PER_OPERATION = 8
"""The gateway's operations are many and mostly reads: fewer examples each (about 300 requests in all)."""
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance, content_type_conformance]


def fuzz(
    document: dict[str, Any],
    url: str,
    token: str,
    *,
    ca_file: str | None = None,
    examples: int = EXAMPLES_PER_OPERATION,
    leave_out: frozenset[str] = frozenset(),
) -> tuple[Counter[str], list[str]]:
    """Every operation of `document` but those `leave_out` names (operationIds) fuzzed against `url`:
    (requests per operation, failures found)."""
    schema = schemathesis.openapi.from_dict(document)
    sent: Counter[str] = Counter()
    failures: list[str] = []
    session = requests.Session()
    session.verify = ca_file or True  # the gateway's HTTPS, verified with the network's own CA
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operation = result.ok()
        item = document["paths"][operation.path]
        described = item[operation.method]
        has_inputs = bool(item.get("parameters") or described.get("parameters") or described.get("requestBody"))
        modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if has_inputs else (GenerationMode.POSITIVE,)
        if described["operationId"] in leave_out:
            continue
        for mode in modes:
            fuzz_operation(operation, mode, examples if has_inputs else 1, url, token, session, sent, failures)
    return sent, failures


def fuzz_operation(
    operation: schemathesis.APIOperation[Any, Any, Any, Any],
    mode: GenerationMode,
    examples: int,
    url: str,
    token: str,
    session: requests.Session,
    sent: Counter[str],
    failures: list[str],
) -> None:
    """`examples` requests of `mode` to one operation, each answer checked."""
    label = operation.label
    auth = {"Authorization": f"Bearer {token}"}

    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(mode))
    def call(case: schemathesis.Case[Any]) -> None:
        response = case.call(base_url=url, session=session, headers=auth, verify=session.verify)
        sent[label] += 1
        try:
            case.validate_response(response, checks=CHECKS, headers=auth)
        except BaseException as failure:  # schemathesis' FailureGroup is a BaseExceptionGroup
            failures.append(f"{label}: {str(failure)[:600]}")

    # Some operations have no negative case to make (nothing but an enum, or a path segment, to break):
    # schemathesis says so (SkipTest), or finds none it can send (Unsatisfiable).
    unmakeable = (SkipTest, Unsatisfiable) if mode is GenerationMode.NEGATIVE else (SkipTest,)
    with contextlib.suppress(*unmakeable):
        call()


def test_the_live_agent_keeps_its_openapi_contract_under_fuzzing(stack):
    agent = stack["agents"][FUZZED_AGENCY]
    document = requests.get(f"{agent['url']}/openapi.json", timeout=10).json()
    started = time.monotonic()
    sent, failures = fuzz(document, agent["url"], agent["token"], leave_out=AGENT_LEFT_OUT)
    took = time.monotonic() - started
    operations = len(operations_of(document)) - len(AGENT_LEFT_OUT)
    print(f"fuzzed {operations} operations with {sum(sent.values())} requests in {took:.1f} s: {dict(sent)}")
    assert len(sent) == operations, "an operation was never called"
    assert failures == []


def test_the_fuzzer_catches_an_undocumented_status(stack):
    """The same run against a document that forgets the 400 of `GET /v1/inbox` fails: the checks bite."""
    agent = stack["agents"][FUZZED_AGENCY]
    document = requests.get(f"{agent['url']}/openapi.json", timeout=10).json()
    inbox = document["paths"]["/v1/inbox"]
    del inbox["get"]["responses"]["400"]
    for parameter in inbox["get"]["parameters"]:
        parameter["schema"] = {"type": "string"}  # lets positive cases send what the agent refuses
    document["paths"] = {"/v1/inbox": inbox}
    _, failures = fuzz(document, agent["url"], agent["token"])
    assert failures
    assert all("Undocumented status code" in failure for failure in failures)


GATEWAY_LEFT_OUT = frozenset({"redriveDeadLetter", "discardDeadLetter", "signReport"})
"""An operator's decisions on real dead letters (the shared network's), logged as the operator's: not fuzzed. Nor
`signReport`, whose body is a PDF (no generator makes one) under an agency's signature: its refusals are tested
with real PDFs and keys in `tests/gateway/test_report_signing.py`."""


def test_the_live_gateway_keeps_its_openapi_contract_under_fuzzing(stack):
    """The gateway too, with the operator's token over HTTPS: every operation but the operator's decisions.
    (The blob operations take signed requests, not a bearer token: they are fuzzed up to their refusals.)"""
    gateway = stack["gateway"]
    document = requests.get(f"{gateway['url']}/openapi.json", timeout=10, verify=gateway["ca_file"]).json()
    started = time.monotonic()
    sent, failures = fuzz(
        document,
        gateway["url"],
        gateway["operator_token"],
        ca_file=gateway["ca_file"],
        examples=GATEWAY_EXAMPLES_PER_OPERATION,
        leave_out=GATEWAY_LEFT_OUT,
    )
    took = time.monotonic() - started
    print(f"fuzzed the gateway's operations with {sum(sent.values())} requests in {took:.1f} s: {dict(sent)}")
    assert len(sent) == len(operations_of(document)) - len(GATEWAY_LEFT_OUT)
    assert failures == []


def operations_of(document: dict[str, Any]) -> list[str]:
    return [
        operation["operationId"]
        for item in document["paths"].values()
        for method, operation in item.items()
        if method in {"get", "put", "post", "delete", "head", "patch"}
    ]
