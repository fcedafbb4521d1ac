"""docs/GUIDE.md's examples run as they are written, against a live `rogatory dev up` network.

Each `sh` block of the guide runs in bash (`set -euo pipefail`; the guide's
curl calls carry `--fail-with-body`, so a refused request fails its block),
the variables of one block kept for the next, as a reader's shell would; each
`python` block runs as a script with those variables in its environment. The
only change made to a block is the network's directory (`/tmp/net` in the
guide, this session's network here). Where the guide tells the reader to wait
(the message must arrive before Libya reads it), the test waits, with the
typed client. What the blocks print is checked against the document's
schemas where it is an answer: the case at the end is the guide's example.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from deploy.client.agent_api import AgentClient
from tests.support.contract import ContractCheck

pytestmark = [pytest.mark.e2e, pytest.mark.broker]

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "GUIDE.md"
BLOCK = re.compile(r"^```(sh|python|json)\n(.*?)^```", re.MULTILINE | re.DOTALL)
GUIDE_STATE_DIR = "/tmp/net"  # noqa: S108 - the directory the guide's reader gave `rogatory dev up`, replaced
VARIABLES = ("BD", "BD_TOKEN", "LY", "LY_TOKEN", "SUBSCRIPTION_ID")
REQUEST_ID = "b5c71fe6-1c43-5d56-bb4e-ad1ce59233df"
"""The guide's request (deploy/samples/BD-LY-2025-0007_01_MLA_REQUEST.json): no other test sends this case."""
ACKNOWLEDGEMENT_ID = "5e68c8bb-b035-5829-a78e-62203157edca"


def guide_blocks() -> list[tuple[str, str]]:
    return BLOCK.findall(GUIDE.read_text(encoding="utf-8"))


def run_sh(script: str, environment: dict[str, str]) -> tuple[str, dict[str, str]]:
    """Run one block in bash from the repository's root; (its output, the guide's variables after it)."""
    dump = "; ".join(f'printf "%s\\0" "${{{name}:-}}"' for name in VARIABLES)
    wrapped = f"set -euo pipefail\n{script}\nprintf '\\n@@VARIABLES@@'; {dump}\n"
    done = subprocess.run(
        ["bash", "-c", wrapped], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"the guide's block failed ({done.returncode}):\n{script}\n{done.stdout}{done.stderr}"
    output, _, values = done.stdout.partition("\n@@VARIABLES@@")
    return output, dict(zip(VARIABLES, values.split("\0")[: len(VARIABLES)], strict=True))


def run_python(script: str, environment: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"the guide's Python failed:\n{script}\n{done.stdout}{done.stderr}"
    return done.stdout


async def wait_until_received(url: str, token: str, message_id: str) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        await AgentClient(session, url, token).wait_for_inbox(message_id, within_s=60)


def json_answers(output: str) -> list[Any]:
    """Each JSON document a block printed (curl prints one per call, without a newline between them)."""
    decoder, answers, at = json.JSONDecoder(), [], 0
    text = output.strip()
    while at < len(text):
        answer, at = decoder.raw_decode(text, at)
        answers.append(answer)
        while at < len(text) and text[at].isspace():
            at += 1
    return answers


def test_the_guides_commands_and_python_run_against_a_live_network(stack):
    root = stack["network"]["state_dir"]
    # The reader installed Rogatory (`rogatory` on the PATH) and runs a case system's endpoint on the machine.
    installed = Path(sys.executable).parent
    environment = {
        "PATH": f"{installed}:/usr/bin:/bin",
        "HOME": str(Path.home()),
        "LANG": "C.UTF-8",
        "HOOK_URL": "http://127.0.0.1:9/rogatory/hooks",  # the discard port: events wait, as for a system down
    }
    variables: dict[str, str] = {}
    agents = stack["agents"]
    outputs: list[tuple[str, str]] = []
    blocks = guide_blocks()
    assert [kind for kind, _ in blocks].count("sh") >= 6, "the guide's shell examples were not found"
    for kind, source in blocks:
        if kind == "json":
            continue
        if "/ack" in source:  # the guide: Libya reads its inbox once the request arrived
            asyncio.run(wait_until_received(agents["LY-MLA-CA"]["url"], agents["LY-MLA-CA"]["token"], REQUEST_ID))
        if "/v1/cases/" in source and "evidence-bundle" not in source:  # the case shows Libya's acknowledgement
            asyncio.run(
                wait_until_received(agents["BD-MOHA-PSD"]["url"], agents["BD-MOHA-PSD"]["token"], ACKNOWLEDGEMENT_ID)
            )
        script = source.replace(GUIDE_STATE_DIR, shlex.quote(str(root)))
        if kind == "sh":
            output, variables = run_sh(script, environment | variables)
            if '"$LY/v1/subscriptions" -d' in source:  # the reader keeps the subscription's id (and secret)
                variables["SUBSCRIPTION_ID"] = json_answers(output)[0]["subscription_id"]
        else:
            output = run_python(script, environment | variables | {"PYTHONPATH": str(ROOT)})
        outputs.append((source, output))
    assert variables["BD"] == agents["BD-MOHA-PSD"]["url"], "the first block read the network's stack.json"
    print(f"ran {len(outputs)} blocks of the guide")
    by_call = dict(outputs)
    submitted = next(output for source, output in outputs if "01_MLA_REQUEST.json" in source and "curl" in source)
    assert json_answers(submitted) == [{"message_id": REQUEST_ID, "status": "queued"}]
    in_python = next(output for source, output in outputs if source.startswith("import asyncio"))
    assert in_python.split()[:1] == [REQUEST_ID]
    case_output = next(
        output for source, output in outputs if "/v1/cases/" in source and "evidence-bundle" not in source
    )
    (case,) = json_answers(case_output)
    example = json.loads(next(source for kind, source in blocks if kind == "json" and '"case_id"' in source))
    assert (case["case_id"], case["state"], case["role"]) == (example["case_id"], example["state"], example["role"])
    assert case["may_send"] == example["may_send"]
    assert [m["message_type"] for m in case["messages"]] == [m["message_type"] for m in example["messages"]]
    assert len(by_call) == len(outputs)
    asyncio.run(unsubscribe(agents["LY-MLA-CA"], variables["SUBSCRIPTION_ID"]))
    asyncio.run(answers_match_the_served_document(agents["BD-MOHA-PSD"]))


async def unsubscribe(entry: dict[str, Any], subscription_id: str) -> None:
    """The guide's subscription points at nothing: gone, so that the shared network does not keep retrying it."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        await AgentClient(session, entry["url"], entry["token"]).unsubscribe(subscription_id)


async def answers_match_the_served_document(entry: dict[str, Any]) -> None:
    """The answers the guide's calls got (status, case, inbox) are valid answers of the document the agent serves."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        document = await AgentClient(session, entry["url"], entry["token"]).openapi()
        check = ContractCheck(document)
        bd = AgentClient(session, entry["url"], entry["token"], observer=check)
        await bd.message(REQUEST_ID)
        await bd.case("BD-LY-2025-0007")
        await bd.inbox()
    assert check.checked == [("getMessageStatus", 200), ("getCase", 200), ("listInbox", 200)]
