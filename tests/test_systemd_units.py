"""The systemd units of `deploy/systemd/`: valid for systemd, sandboxed, and set every variable the services need."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agents.settings import AgentSettings
from gateway.settings import GatewaySettings
from runtime.runner import EXIT_CONFIGURATION, SHUTDOWN_TIMEOUT_S
from runtime.settings import ServiceSettings, variables_of
from runtime.supervision import EXIT_UNHEALTHY

ROOT = Path(__file__).resolve().parents[1]
UNITS = ROOT / "deploy" / "systemd"
VENV_PYTHON = "/opt/rogatory/venv/bin/python"
"""The interpreter the units run: the project installed in a venv (docs/DEPLOY.md, section 7)."""
INSTANCE = "BD-MOHA-PSD"
"""An agency to instantiate the agent template with."""
HTTP_SHUTDOWN_S = 60.0
"""aiohttp's `shutdown_timeout`: how long a stopping service waits for an HTTP request in flight."""


UNIT_FILE = {"gateway": "rogatory-gateway.service", "agent": "rogatory-agent@.service"}
ENV_FILE = {"gateway": "gateway.env.example", "agent": "agent.env.example"}
SETTINGS: dict[str, type[ServiceSettings]] = {"gateway": GatewaySettings, "agent": AgentSettings}
NO_SYSTEMD_ANALYZE = (
    "systemd-analyze is not installed: on Debian, `apt-get install systemd` provides it "
    "(installing the package does not make systemd PID 1, so a container keeps working)"
)


@pytest.fixture(params=["gateway", "agent"])
def service(request: pytest.FixtureRequest) -> str:
    """Each service that has a unit."""
    return str(request.param)


def _directives(unit: str, key: str) -> list[str]:
    """The values of every `key=` line of a unit file, in order."""
    return [line.partition("=")[2] for line in unit.splitlines() if line.startswith(f"{key}=")]


def _unit_environment(service: str) -> dict[str, str]:
    """The variables the unit sets itself (`Environment=`), its specifiers expanded as systemd would."""
    unit_name = f"rogatory-agent@{INSTANCE}.service" if service == "agent" else UNIT_FILE[service]
    specifiers = {"%i": INSTANCE, "%S": "/var/lib", "%d": f"/run/credentials/{unit_name}"}
    environment = {}
    for assignment in _directives((UNITS / UNIT_FILE[service]).read_text(), "Environment"):
        name, _, value = assignment.partition("=")
        for specifier, expansion in specifiers.items():
            value = value.replace(specifier, expansion)
        environment[name] = value
    return environment


def _env_file(service: str) -> dict[str, str]:
    """The assignments of an example environment file (comments and blank lines left out)."""
    lines = (line.strip() for line in (UNITS / ENV_FILE[service]).read_text().splitlines())
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def _rendered(tmp_path: Path) -> Path:
    """A copy of the units whose ExecStart runs this interpreter: `verify` refuses a binary that does not exist."""
    for name in UNIT_FILE.values():
        text = (UNITS / name).read_text()
        assert VENV_PYTHON in text, f"{name} runs something else than {VENV_PYTHON}"
        (tmp_path / name).write_text(text.replace(VENV_PYTHON, sys.executable))
    return tmp_path


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """`systemd-analyze verify` finds no error and no warning in either unit (the agent's as an instance)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip(NO_SYSTEMD_ANALYZE)
    units = _rendered(tmp_path)
    # verify exits 0 on warnings (an unknown key, a bad value "ignoring"): its output is what tells.
    result = subprocess.run(
        [
            analyze,
            "verify",
            "--man=no",
            str(units / UNIT_FILE["gateway"]),
            str(units / f"rogatory-agent@{INSTANCE}.service"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    about_ours = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if str(units) in line or "rogatory" in line.lower()
    ]
    assert result.returncode == 0, result.stdout + result.stderr
    assert about_ours == []


def test_units_security_exposure_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`systemd-analyze security` reads both units offline; their exposure is printed (`pytest -s`), not judged."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip(NO_SYSTEMD_ANALYZE)
    units = _rendered(tmp_path)
    for name in (UNIT_FILE["gateway"], f"rogatory-agent@{INSTANCE}.service"):
        result = subprocess.run(
            [analyze, "security", "--offline=yes", "--no-pager", str(units / name)],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if "--offline" in result.stderr and "unrecognized" in result.stderr:
            pytest.skip("this systemd-analyze has no --offline (systemd < 250)")
        overall = [line for line in result.stdout.splitlines() if "Overall exposure level" in line]
        assert len(overall) == 1, result.stdout + result.stderr
        with capsys.disabled():
            print(f"\n{overall[0]}")


def test_env_files_name_only_variables_the_service_reads(service: str) -> None:
    """Every `ROGATORY_*` an example environment file names, set or in a comment, is a setting of its service."""
    known = {variable.name for variable in variables_of(SETTINGS[service])}
    named = set(re.findall(r"ROGATORY_[A-Z0-9_]+", (UNITS / ENV_FILE[service]).read_text()))
    assert named - known == set()


def test_units_name_only_variables_the_service_reads(service: str) -> None:
    """Every variable a unit sets itself is a setting of its service."""
    known = {variable.name for variable in variables_of(SETTINGS[service])}
    assert set(_unit_environment(service)) - known == set()


def test_every_required_variable_is_set_by_the_env_file_or_the_unit(service: str) -> None:
    """A service given its example environment file under its unit misses no required variable."""
    required = {variable.name for variable in variables_of(SETTINGS[service]) if variable.default == "required"}
    assert required - set(_env_file(service)) - set(_unit_environment(service)) == set()


def test_env_files_leave_the_units_variables_alone(service: str) -> None:
    """An environment file sets none of the unit's own variables, which it would override (data dir, credential)."""
    assert set(_env_file(service)) & set(_unit_environment(service)) == set()


def test_example_env_files_under_their_units_are_valid_settings(service: str) -> None:
    """Filled in (digests for their placeholders), an example env file and its unit's variables make valid settings."""
    digest = "0" * 64
    filled = {
        name: re.sub(r"REPLACE-WITH-SHA256[-A-Z0-9]*", digest, value) for name, value in _env_file(service).items()
    }
    settings = SETTINGS[service].from_environ(filled | _unit_environment(service))
    assert str(settings.data_dir).startswith("/var/lib/rogatory/")
    assert str(settings.keystore_passphrase_file).startswith("/run/credentials/")


def test_units_restart_a_wedged_service_but_not_a_misconfigured_one(service: str) -> None:
    """Restart=on-failure restarts exit 70 (watchdog); RestartPreventExitStatus keeps exit 2 (configuration) down."""
    unit = (UNITS / UNIT_FILE[service]).read_text()
    assert _directives(unit, "Restart") == ["on-failure"]
    assert _directives(unit, "RestartPreventExitStatus") == [str(EXIT_CONFIGURATION)]
    assert str(EXIT_UNHEALTHY) not in " ".join(_directives(unit, "SuccessExitStatus"))


def test_units_wait_longer_than_the_services_own_shutdown(service: str) -> None:
    """TimeoutStopSec exceeds the tasks' shutdown bound plus aiohttp's wait for a request in flight."""
    (timeout,) = _directives((UNITS / UNIT_FILE[service]).read_text(), "TimeoutStopSec")
    assert timeout.endswith("s")
    assert float(timeout.removesuffix("s")) > SHUTDOWN_TIMEOUT_S + HTTP_SHUTDOWN_S


def test_units_keep_the_passphrase_a_credential(service: str) -> None:
    """The keystore's passphrase comes from LoadCredential=, and the service reads it from the credentials dir."""
    unit = (UNITS / UNIT_FILE[service]).read_text()
    (credential,) = _directives(unit, "LoadCredential")
    assert credential.startswith("passphrase:/etc/rogatory/credentials/")
    assert "ROGATORY_KEYSTORE_PASSPHRASE_FILE=%d/passphrase" in _directives(unit, "Environment")


_MEMORY_DENY_WRITE_EXECUTE_PROBE = """
import ctypes, mmap, sys
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
    sys.exit(77)
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
except PermissionError:
    pass
else:
    sys.exit("writable and executable memory was still granted")
import asyncio, sqlite3
import agents.service, gateway.service
import nacl.bindings, nacl.public, nacl.pwhash, nacl.signing
from protocol.keystore import lock_keystore, unlock_keystore
signing = nacl.signing.SigningKey.generate()
signing.verify_key.verify(signing.sign(b"m"))
recipient = nacl.public.PrivateKey.generate()
nacl.public.SealedBox(recipient).decrypt(nacl.public.SealedBox(recipient.public_key).encrypt(b"m"))
key, nonce = bytes(32), bytes(24)
sealed = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(b"m", b"ad", nonce, key)
nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(sealed, b"ad", nonce, key)
passphrase = b"a passphrase of the probe"
locked = lock_keystore(
    {"signing": bytes(32)}, passphrase,
    opslimit=nacl.pwhash.argon2id.OPSLIMIT_MIN, memlimit=nacl.pwhash.argon2id.MEMLIMIT_MIN,
)
assert unlock_keystore(locked, passphrase) == {"signing": bytes(32)}
sqlite3.connect(":memory:").execute("select 1")
async def main():
    import aiosqlite
    async with aiosqlite.connect(":memory:") as db:
        await db.execute("select 1")
asyncio.run(main())
"""


def test_services_need_no_writable_executable_memory() -> None:
    """Under the kernel's memory-deny-write-execute, the services' modules load and libsodium's primitives run.

    systemd's MemoryDenyWriteExecute= refuses the same mappings; the units set it on the strength of this.
    """
    result = subprocess.run(
        [sys.executable, "-c", _MEMORY_DENY_WRITE_EXECUTE_PROBE],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        cwd=ROOT,
    )
    if result.returncode == 77:
        pytest.skip("the kernel has no PR_SET_MDWE (Linux < 6.3): memory-deny-write-execute cannot be tried here")
    assert result.returncode == 0, result.stderr[-2000:]
