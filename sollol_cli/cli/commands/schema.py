"""`sollol schema`: the manifest's JSON Schema, for editors."""

from __future__ import annotations

import sys


def schema() -> None:
    """Print the JSON Schema of cluster.yaml (editors use it to validate as you type)."""
    from sollol_cli.manifest.schema import cluster_schema_text

    sys.stdout.write(cluster_schema_text())
