"""What an agent's `/healthz` says: its inbox, the directory in force, the audit log, its own TLS certificates.

`AgentHealth` puts together what each part reports (`runtime.directory`,
`agents.auditing`, `runtime.certificates`), with every part's alarms in one
`alarms` list. The certificates (the API's HTTPS certificate, the gateway's
CA, the broker client certificate: `AgentSettings.watched_certificates`) are
read again on each answer, a few small local files, so that a renewed one
shows at once; an unreadable file is an alarm, never an error. Alarms do not
change `status`, which says whether the agent can do its work now.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from agents.auditing import Auditing
from protocol.ids import AgencyId
from runtime.certificates import WatchedCertificate, certificate_health, read_watched
from runtime.directory import DirectoryWatch


@dataclass(frozen=True, slots=True)
class AgentHealth:
    """The agent's health answer, read from its parts when asked."""

    agency: AgencyId
    inbox_connected: Callable[[], bool]
    directory: DirectoryWatch
    auditing: Auditing | None
    certificates: tuple[Path, ...]
    """The files whose certificates are watched (`AgentSettings.watched_certificates`)."""
    clock: Callable[[], datetime]

    def __call__(self) -> dict[str, Any]:
        """The answer, with the certificates read now."""
        return self.answer(self.read_certificates())

    def read_certificates(self) -> list[WatchedCertificate]:
        """The watched certificates as their files hold them now (an unreadable file kept, with why)."""
        return read_watched(self.certificates)

    def answer(self, certificates: Sequence[WatchedCertificate]) -> dict[str, Any]:
        """The answer, given the certificates read (so that `/metrics` reads the files once for both)."""
        connected = self.inbox_connected()
        audit = {} if self.auditing is None else self.auditing.health()
        own = certificate_health(certificates, self.clock())
        alarms = [*self.directory.alarms(), *audit.pop("alarms", []), *own.pop("alarms", [])]
        return {
            "status": "ok" if connected and not self.directory.expired() else "degraded",
            "service": "agent",
            "agency": self.agency,
            "inbox_connected": connected,
            **self.directory.health(),
            **audit,
            **own,
            **({"alarms": alarms} if alarms else {}),
        }


__all__ = ["AgentHealth"]
