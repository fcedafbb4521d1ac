"""A network made by the site commands, as operators at three kinds of site would make it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy.cli.commands import main

PASSPHRASE = "correct horse battery staple"
AGENCIES = {
    "BD-MOHA-PSD": ("Public Security Division, Ministry of Home Affairs", "BD"),
    "LY-MLA-CA": ("Central authority for mutual legal assistance of Libya", "LY"),
}


@dataclass(frozen=True)
class Sites:
    """The sites' directories, each standing for a different machine."""

    root: Path
    passphrase_file: Path

    @property
    def authority(self) -> Path:
        return self.root / "authority"

    @property
    def gateway(self) -> Path:
        return self.root / "hub" / "gateway"

    def agency(self, agency: str) -> Path:
        return self.root / agency

    @property
    def directory(self) -> Path:
        return self.root / "hub" / "directory.json"

    def run(self, *argv: str) -> int:
        return main(list(argv))

    def sign(self, *extra: str) -> int:
        return self.run(
            "authority", "sign", "--dir", str(self.authority), "--out", str(self.directory),
            "--passphrase-file", str(self.passphrase_file), *extra,
        )  # fmt: skip


def make_sites(root: Path) -> Sites:
    """Authority init, two agencies and the gateway init and enrol, an agreement, version 1 signed."""
    passphrase_file = root / "passphrase"
    passphrase_file.write_text(PASSPHRASE)
    sites = Sites(root, passphrase_file)
    secret = ("--passphrase-file", str(passphrase_file))
    assert sites.run("authority", "init", "--dir", str(sites.authority), "--network", "mla-test", *secret) == 0
    for agency, (name, country) in AGENCIES.items():
        assert (
            sites.run(
                "agency",
                "init",
                "--agency",
                agency,
                "--name",
                name,
                "--country",
                country,
                "--dir",
                str(sites.agency(agency)),
                *secret,
            )
            == 0
        )
    assert (
        sites.run(
            "gateway",
            "init",
            "--gateway-id",
            "gateway.mla-test.example",
            "--log-origin",
            "mla-test.example/log",
            "--dir",
            str(sites.gateway),
            *secret,
        )
        == 0
    )
    for agency in AGENCIES:
        request = sites.agency(agency) / "enrolment.json"
        assert sites.run("authority", "add-agency", str(request), "--dir", str(sites.authority)) == 0
    assert (
        sites.run("authority", "add-gateway", str(sites.gateway / "enrolment.json"), "--dir", str(sites.authority)) == 0
    )
    assert (
        sites.run(
            "authority",
            "add-agreement",
            "--dir",
            str(sites.authority),
            "--id",
            "BD-LY-UNTOC",
            "--from",
            "BD-MOHA-PSD",
            "--to",
            "LY-MLA-CA",
            "--types",
            "*",
            "--both-ways",
        )
        == 0
    )
    assert sites.sign() == 0
    return sites


@pytest.fixture
def sites(tmp_path: Path) -> Sites:
    """A fresh network made by the site commands, version 1 signed."""
    return make_sites(tmp_path)
