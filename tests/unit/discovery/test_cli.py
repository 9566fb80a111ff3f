"""`sollol discover` refusals: clear one-line errors, exit 2, and nothing is scanned."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.cli_helpers import invoke


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["8.8.8.0/24"], "error: 8.8.8.0/24 is not a private or loopback range; sollol scans your own lab; "
                         "pass --force only for ranges you are allowed to scan\n"),
        (["10.0.0.0/8"], "error: 10.0.0.0/8 is larger than a /16 (16777216 addresses); scan smaller ranges, "
                         "or pass --force if you really mean it\n"),
        (["10.0.0/24x"], "error: '10.0.0/24x' is not a CIDR; write it like 192.168.1.0/24 or 10.0.0.5/32\n"),
        (["127.0.0.1/32", "--ports", "80,x"], "error: --ports: 'x' is not a port number; e.g. --ports 11434,8080,50052\n"),
        ([], "error: nothing to scan: give a CIDR such as 192.168.1.0/24; or set discovery.subnets in the manifest, "
             "or use --local for this machine's subnets\n"),
    ],
)  # fmt: skip
def test_refusals(args: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ./cluster.yaml
    result = invoke("discover", *args)
    assert result.exit_code == 2
    assert result.stderr == message
    assert result.stdout == ""


def test_manifest_subnets_are_the_default(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text("name: lab\ndiscovery: {subnets: [127.0.0.1/32], ports: [9]}\n")
    result = invoke("discover", "-f", str(path), "--json", "-q")
    assert result.exit_code == 0, result.stderr
    assert '"networks": [\n    "127.0.0.1/32"\n  ]' in result.stdout
    assert '"ports": [\n    9\n  ]' in result.stdout
