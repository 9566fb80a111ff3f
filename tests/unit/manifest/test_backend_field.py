"""`llama_cpp.backend`, cluster-wide and per node: a node's own choice wins, else the cluster's, else auto."""

from __future__ import annotations

from sollol_cli.manifest.models import Cluster, LlamaCppBackend


def test_node_backend_overrides_the_cluster() -> None:
    cluster = Cluster.model_validate(
        {
            "llama_cpp": {"backend": "vulkan"},
            "nodes": [
                {"name": "gpu", "address": "10.0.0.1"},
                {"name": "cpu", "address": "10.0.0.2", "llama_cpp": {"backend": "cpu"}},
                {"name": "own", "address": "10.0.0.3", "llama_cpp": {}},
            ],
        }
    )
    assert [cluster.llama_cpp.for_node(node).backend for node in cluster.nodes] == [
        LlamaCppBackend.vulkan,
        LlamaCppBackend.cpu,
        LlamaCppBackend.vulkan,
    ]


def test_default_is_auto() -> None:
    cluster = Cluster.model_validate({"nodes": [{"name": "a", "address": "10.0.0.1"}]})
    assert cluster.llama_cpp.for_node(cluster.nodes[0]).backend == LlamaCppBackend.auto
