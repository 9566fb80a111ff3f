"""The Python API in front of Ollama stand-ins (tests/standin): `cluster_for(*standins)` is the manifest the
API opens, with each stand-in a node (the gateway tests' `cluster_of`)."""

from __future__ import annotations

from tests.unit.gateway.conftest import FAST, cluster_of, standin

__all__ = ["FAST", "cluster_of", "standin"]
