"""JSON Schema of cluster.yaml for editors (yaml-language-server), generated from the pydantic models."""

from __future__ import annotations

import json
from typing import Any

from sollol_cli.manifest.models import Cluster

SCHEMA_FILE = "sollol-cluster.schema.json"
SCHEMA_ID = "https://sollol.invalid/schema/cluster.json"  # an identifier, never fetched


def cluster_schema() -> dict[str, Any]:
    schema = Cluster.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = SCHEMA_ID
    schema["title"] = "sollol cluster manifest"
    return schema


def cluster_schema_text() -> str:
    return json.dumps(cluster_schema(), indent=2, sort_keys=False) + "\n"
