"""What `sollol init` says after writing a manifest."""

from __future__ import annotations

from typing import Any

from sollol_cli.manifest.init import Written
from sollol_cli.ui.console import info, warn


def written_data(written: Written) -> dict[str, Any]:
    cluster = written.cluster
    return {
        "path": str(written.path),
        "from": [str(p) for p in written.read],
        "backends": [{"kind": b.kind.value, "address": b.address, "port": b.effective_port} for b in cluster.backends],
        "models": [{"name": m.name, "mode": m.mode.value} for m in cluster.models],
        "notes": written.notes,
    }


def print_written(written: Written) -> None:
    cluster = written.cluster
    kinds = [b.kind.value for b in cluster.backends]
    counts = ", ".join(f"{kinds.count(k)} {k}" for k in dict.fromkeys(kinds)) or "no backends"
    models = ", ".join(f"{m.name} ({m.mode.value})" for m in cluster.models) or "no models"
    if written.read:
        info(f"read {', '.join(str(p) for p in written.read)}")
    info(f"wrote {written.path}: {counts}; {models}")
    for note in written.notes:
        warn(note)
    info(f"next: sollol validate {written.path} && sollol status -f {written.path}")
