"""`down` of a whole cluster also stops the controller's coordinators, through what its caller passes (sharding
is above provisioning: provisioning never imports it). Runs over the local runner, no root needed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sollol_cli import events
from sollol_cli.manifest.loader import load_manifest
from sollol_cli.provision.apply import Options
from sollol_cli.provision.cluster import provision
from sollol_cli.settings import Settings


@pytest.mark.parametrize(
    ("only", "dry_run", "stopped"),
    [(None, False, True), (["here"], False, False), (None, True, False)],
    ids=["whole cluster", "one node", "dry run"],
)
def test_down_stops_the_coordinators_it_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, only: list[str] | None, dry_run: bool, stopped: bool
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    manifest = tmp_path / "cluster.yaml"
    manifest.write_text("name: lab\nnodes:\n  - {name: here, address: local}\n")
    seen: list[events.Event] = []
    calls: list[str] = []

    def stop_coordinators(report: events.Reporter) -> list[str]:
        calls.append("stop")
        return ["tiny"]

    outcome = asyncio.run(
        provision(
            load_manifest(manifest),
            "down",
            Settings(state_dir=tmp_path / "state"),
            reporter=seen.append,
            options=Options(dry_run=dry_run),
            only=only,
            stop_coordinators=stop_coordinators,
        )  # fmt: skip
    )
    assert [n.status for n in outcome.nodes] == ["planned" if dry_run else "unchanged"]
    assert calls == (["stop"] if stopped else [])
    done = [e for e in seen if isinstance(e, events.StepDone) and e.subject == "controller"]
    assert done == ([events.StepDone("controller", "stop", "coordinator for tiny")] if stopped else [])
