"""A corpus of broken manifests: each gives the documented exit code, file:line:col and no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.cli_helpers import invoke

GOOD_NODE = "nodes:\n  - name: a\n    address: 10.0.0.1\n"

# (id, file content, exit code, expected stderr lines before the final "error:" line; {f} is the file path)
CASES: list[tuple[str, str | bytes, int, list[str]]] = [
    ("yaml-syntax-bad-indent", "nodes:\n  - name: a\n   address: x\n", 3,
     ["{f}:3:4: YAML syntax error: expected <block end>, but found '<block mapping start>'"]),
    ("yaml-syntax-unclosed-flow", "nodes: [\n  {name: a\n", 3,
     ["{f}:3:1: YAML syntax error: expected ',' or '}', but got '<stream end>'"]),
    ("yaml-tab-indent", "nodes:\n\t- name: a\n", 3,
     ["{f}:2:1: YAML syntax error: found character '\\t' that cannot start any token"]),
    ("yaml-duplicate-key", "name: a\nname: b\n", 3,
     ['{f}:2:1: YAML syntax error: found duplicate key "name" with value "b" (original value: "a")']),
    ("empty-file", "", 3, ["{f}:1:1: the manifest is empty; start with 'nodes:'"]),
    ("only-comments", "# nothing here\n", 3, ["{f}:1:1: the manifest is empty; start with 'nodes:'"]),
    ("top-level-list", "- a\n- b\n", 3, ["{f}:1:1: the manifest must be a mapping of keys, not a list"]),
    ("top-level-scalar", "hello\n", 3, ["{f}:1:1: the manifest must be a mapping of keys, not a str"]),
    # the line where the content starts, not the comment above it
    ("top-level-list-after-comment", "# my cluster\n- a\n- b\n", 3,
     ["{f}:2:1: the manifest must be a mapping of keys, not a list"]),
    ("top-level-scalar-after-comment", "# my cluster\n\nhello\n", 3,
     ["{f}:3:1: the manifest must be a mapping of keys, not a str"]),
    ("indented-list-after-document-start", "---\n# my cluster\n  - a\n", 3,
     ["{f}:3:3: the manifest must be a mapping of keys, not a list"]),
    # deeper than the YAML reader's recursion can go: one line at the deepest point, not an internal error
    ("nested-1000-levels-flow", "nodes: " + "[" * 1000 + "]" * 1000 + "\n", 3,
     ["{f}:1:1007: nested 1001 levels deep, too deep to read; a manifest needs only a few levels"]),
    ("nested-1000-levels-block", "# deep\nx:\n" + "".join("  " * i + "b:\n" for i in range(1, 1000)), 3,
     ["{f}:1001:1999: nested 1000 levels deep, too deep to read; a manifest needs only a few levels"]),
    ("unknown-top-key", "nodse: []\n", 3, ["{f}:1:1: nodse: unknown key 'nodse'; did you mean 'nodes'?"]),
    ("unknown-node-key", GOOD_NODE + "    adress: x\n", 3,
     ["{f}:4:5: nodes[0].adress: unknown key 'adress'; did you mean 'address'?"]),
    ("unknown-role-key", GOOD_NODE + "    rpc:\n      prot: 50052\n", 3,
     ["{f}:5:7: nodes[0].rpc.prot: unknown key 'prot'; did you mean 'port'?"]),
    ("missing-address", "nodes:\n  - name: a\n", 3, ["{f}:2:5: nodes[0].address: missing required key 'address'"]),
    ("missing-name", "nodes:\n  - address: 10.0.0.1\n", 3, ["{f}:2:5: nodes[0].name: missing required key 'name'"]),
    ("nodes-not-list", "nodes: {a: 1}\n", 3, ["{f}:1:1: nodes: expected a list, got a mapping"]),
    ("node-not-mapping", "nodes:\n  - just-a-name\n", 3,
     ["{f}:2:5: nodes[0]: expected a mapping of keys, got 'just-a-name'"]),
    ("port-not-number", GOOD_NODE + "    rpc: {port: fifty}\n", 3,
     ["{f}:4:17: nodes[0].rpc.port: expected a whole number, got 'fifty'"]),
    ("port-too-big", GOOD_NODE + "    rpc: {port: 70000}\n", 3,
     ["{f}:4:17: nodes[0].rpc.port: input should be less than or equal to 65535"]),
    ("port-zero", "ssh: {port: 0}\n", 3, ["{f}:1:13: ssh.port: input should be greater than or equal to 1"]),
    ("bad-address", "nodes:\n  - name: a\n    address: 300.1.2.3\n", 3,
     ["{f}:3:14: nodes[0].address: '300.1.2.3' is not an IP address or host name"]),
    ("bad-address-chars", "nodes:\n  - name: a\n    address: 'my host'\n", 3,
     ["{f}:3:14: nodes[0].address: 'my host' is not an IP address or host name"]),
    ("bind-hostname", GOOD_NODE + "    rpc: {bind: myhost}\n", 3,
     ["{f}:4:17: nodes[0].rpc.bind: bind must be an IP address literal, not 'myhost'"]),
    ("bad-node-name", "nodes:\n  - name: 'a b'\n    address: 10.0.0.1\n", 3,
     ["{f}:2:11: nodes[0].name: use letters, digits, '.', '_' or '-' (at most 63)"]),
    ("bad-policy", "ssh: {host_key_policy: yes-please}\n", 3,
     ["{f}:1:24: ssh.host_key_policy: input should be 'strict', 'accept-new' or 'off'"]),
    ("bad-mode", "models:\n  - name: m\n    mode: sharded\n", 3,
     ["{f}:3:11: models[0].mode: input should be 'auto', 'distribute' or 'shard'"]),
    ("bad-backend", "llama_cpp: {backend: metal}\n", 3,
     ["{f}:1:22: llama_cpp.backend: input should be 'auto', 'cpu', 'vulkan', 'cuda' or 'rocm'"]),
    ("bad-node-backend", GOOD_NODE + "    llama_cpp: {backend: opencl}\n", 3,
     ["{f}:4:26: nodes[0].llama_cpp.backend: input should be 'auto', 'cpu', 'vulkan', 'cuda' or 'rocm'"]),
    ("bad-build", "llama_cpp: {build: cloud}\n", 3,
     ["{f}:1:20: llama_cpp.build: input should be 'controller' or 'node'"]),
    ("node-build-with-node-bin-dir", GOOD_NODE + "    llama_cpp:\n      build: node\n      node_bin_dir: /opt/llama\n", 3,
     ["{f}:6:7: nodes[0].llama_cpp.node_bin_dir: build: node makes the binaries on the node; drop 'node_bin_dir' "
      "or use build: controller"]),
    ("cluster-build-node-with-bin-dir", "llama_cpp: {build: node, bin_dir: /opt/llama}\n", 3,
     ["{f}:1:26: llama_cpp.bin_dir: build: node makes the binaries on the node; drop 'bin_dir' or use build: "
      "controller"]),
    ("node-both-bin-dirs", GOOD_NODE + "    llama_cpp: {bin_dir: /a, node_bin_dir: /b}\n", 3,
     ["{f}:4:17: nodes[0].llama_cpp.bin_dir: give either 'bin_dir' (uploaded) or 'node_bin_dir', not both"]),
    ("bad-pooling", GOOD_NODE + "    llamacpp: {model: /m.gguf, embeddings: true, pooling: max}\n", 3,
     ["{f}:4:59: nodes[0].llamacpp.pooling: input should be 'last', 'mean', 'cls' or 'model'"]),
    ("pooling-without-embeddings", GOOD_NODE + "    llamacpp: {model: /m.gguf, pooling: mean}\n", 3,
     ["{f}:4:32: nodes[0].llamacpp.pooling: pooling applies to embeddings only: add 'embeddings: true' or drop "
      "'pooling'"]),
    ("model-pooling-without-embeddings", "models:\n  - name: m\n    pooling: cls\n", 3,
     ["{f}:3:5: models[0].pooling: pooling applies to embeddings only: add 'embeddings: true' or drop 'pooling'"]),
    ("embeddings-not-bool", "models:\n  - name: m\n    embeddings: sometimes\n", 3,
     ["{f}:3:17: models[0].embeddings: expected true or false, got 'sometimes'"]),
    ("memory-mib-not-rpc", "backends:\n  - {kind: ollama, address: 10.0.0.1, memory_mib: 600}\n", 3,
     ["{f}:2:5: backends[0]: memory_mib is for rpc backends (kind: rpc) only; remove it here"]),
    ("bad-cidr", "discovery: {subnets: [10.0.0.0/33]}\n", 3,
     ["{f}:1:23: discovery.subnets[0]: '10.0.0.0/33' is not a CIDR like 10.0.0.0/24"]),
    ("bool-not-bool", GOOD_NODE + "    rpc: {cache: maybe}\n", 3,
     ["{f}:4:18: nodes[0].rpc.cache: expected true or false, got 'maybe'"]),
    ("duplicate-node-names", "nodes:\n  - {name: a, address: 10.0.0.1}\n  - {name: a, address: 10.0.0.2}\n", 3,
     ["{f}:3:6: nodes[1].name: duplicate node name 'a' (also nodes[0])"]),
    ("duplicate-address-port",
     "nodes:\n  - {name: a, address: 10.0.0.1, rpc: {}}\n  - {name: b, address: 10.0.0.1, rpc: {}}\n", 3,
     ["{f}:3:34: nodes[1].rpc.port: 10.0.0.1:50052 is already used by nodes[0].rpc.port"]),
    ("duplicate-model-names", GOOD_NODE + "models:\n  - {name: Tiny}\n  - {name: 'library/tiny:latest'}\n", 3,
     ["{f}:6:6: models[1].name: duplicate model 'library/tiny:latest' (also models[0])"]),
    ("shard-without-rpc", GOOD_NODE + "models:\n  - {name: big, mode: shard}\n", 3,
     ["{f}:5:17: models[0].mode: mode 'shard' needs at least one node with an 'rpc' role"]),
    # rpc.device: a name or a list of names; tensor_split: one share per device the rpc-servers serve
    ("rpc-devices-in-one-string", GOOD_NODE + "    rpc: {device: 'CUDA0,CUDA1'}\n", 3,
     ["{f}:4:19: nodes[0].rpc.device: write several devices as a list: [CUDA0, CUDA1]"]),
    ("rpc-device-not-a-name", GOOD_NODE + "    rpc: {device: [CUDA0, 'cuda 1']}\n", 3,
     ["{f}:4:11: nodes[0].rpc.device: 'cuda 1' is not a device name (ggml names them CPU, CUDA0, Vulkan1, ROCm0, ...)"]),
    ("rpc-device-list-empty", GOOD_NODE + "    rpc: {device: []}\n", 3,
     ["{f}:4:11: nodes[0].rpc.device: give at least one device, or leave 'device' out"]),
    ("rpc-device-twice", GOOD_NODE + "    rpc: {device: [CUDA0, CUDA0]}\n", 3,
     ["{f}:4:11: nodes[0].rpc.device: a device is listed twice"]),
    ("tensor-split-per-device", GOOD_NODE + "    rpc: {device: [Vulkan0, CPU]}\n"
     "models:\n  - {name: big, tensor_split: [1, 2, 3]}\n", 3,
     ["{f}:6:17: models[0].tensor_split: has 3 shares but the cluster's rpc backends serve 2 devices"]),
    ("tensor-split-cpu-build-one-device", GOOD_NODE + "    rpc: {}\n    llama_cpp: {backend: cpu}\n"
     "models:\n  - {name: big, tensor_split: [1, 2]}\n", 3,
     ["{f}:7:17: models[0].tensor_split: has 2 shares but the cluster's rpc backends serve 1 device"]),
    ("tensor-split-gpu-default-at-least", GOOD_NODE + "    rpc: {device: [CUDA0, CUDA1]}\n"
     "  - {name: b, address: 10.0.0.2, rpc: {}}\nmodels:\n  - {name: big, tensor_split: [1, 2]}\n", 3,
     ["{f}:7:17: models[0].tensor_split: has 2 shares but the cluster's rpc backends serve at least 3 devices"]),
    ("unknown-store-node", GOOD_NODE + "    rpc: {}\nmodels:\n  - {name: big, store_node: aa}\n", 3,
     ["{f}:6:17: models[0].store_node: no node named 'aa'; did you mean 'a'?"]),
    ("unknown-coordinator-node", GOOD_NODE + "    rpc: {}\nmodels:\n  - {name: big, coordinator: aa}\n", 3,
     ["{f}:6:17: models[0].coordinator: no node named 'aa'; did you mean 'a'?"]),
    ("coordinator-port-without-node", GOOD_NODE + "    rpc: {}\nmodels:\n  - {name: big, coordinator_port: 41200}\n", 3,
     ["{f}:6:17: models[0].coordinator_port: coordinator_port needs 'coordinator' (a node name)"]),
    ("coordinator-cannot-reach-loopback-rpc",
     GOOD_NODE + "  - {name: l, address: local, rpc: {}}\nmodels:\n  - {name: big, coordinator: a}\n", 3,
     ["{f}:6:17: models[0].coordinator: a coordinator on node 'a' cannot reach the rpc-servers on loopback: l"]),
    ("several-problems-at-once", "ssh:\n  usr: root\n  port: x\nnodes:\n  - name: a\n", 3,
     ["{f}:2:3: ssh.usr: unknown key 'usr'; did you mean 'user'?",
      "{f}:3:9: ssh.port: expected a whole number, got 'x'",
      "{f}:5:5: nodes[0].address: missing required key 'address'"]),
    ("type-error-and-cross-field-problem-at-once",
     "ssh: {port: x}\n" + GOOD_NODE + "    rpc: {}\nmodels:\n  - {name: big, store_node: aa}\n", 3,
     ["{f}:1:13: ssh.port: expected a whole number, got 'x'",
      "{f}:7:17: models[0].store_node: no node named 'aa'; did you mean 'a'?"]),
    ("non-utf8", b"name: caf\xe9\n", 3, ["{f}:1:10: file is not UTF-8 text; save it as UTF-8"]),
]  # fmt: skip


@pytest.mark.parametrize(("content", "code", "lines"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_manifest(tmp_path: Path, content: str | bytes, code: int, lines: list[str]) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    result = invoke("validate", str(path))
    expected = [line.replace("{f}", str(path)) for line in lines]
    noun = "problem" if len(lines) == 1 else "problems"
    assert result.stderr.splitlines() == [*expected, f"error: invalid manifest: {len(lines)} {noun}"]
    assert result.exit_code == code
    assert result.stdout == ""


def test_directory_is_a_usage_error(tmp_path: Path) -> None:
    result = invoke("validate", str(tmp_path))
    assert result.exit_code == 2
    assert (
        result.stderr
        == f"error: manifest {tmp_path} is a directory; give the YAML file, e.g. {tmp_path}/cluster.yaml\n"
    )


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    result = invoke("validate", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 2
    assert result.stderr == f"error: manifest {tmp_path}/nope.yaml does not exist; check the path\n"


def test_unreadable_file(tmp_path: Path) -> None:
    # chmod does not stop root, so point the manifest at a file whose read fails for everyone.
    path = tmp_path / "cluster.yaml"
    path.symlink_to("/proc/self/mem")
    result = invoke("validate", str(path))
    assert result.exit_code == 2
    assert result.stderr == f"error: cannot read manifest {path}: Input/output error; check its permissions\n"


def test_path_through_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = invoke("validate", str(blocker / "cluster.yaml"))
    assert result.exit_code == 2
    assert result.stderr == f"error: manifest {blocker}/cluster.yaml does not exist; check the path\n"


def test_no_manifest_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke("validate")
    assert result.exit_code == 2
    assert result.stderr == (
        "error: no manifest: ./cluster.yaml does not exist and SOLLOL_MANIFEST is not set; "
        "pass the manifest path or create cluster.yaml (examples: examples/clusters/)\n"
    )


def test_manifest_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text(GOOD_NODE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SOLLOL_MANIFEST", str(path))
    result = invoke("validate", "--json")
    assert result.exit_code == 0, result.stderr
    assert '"manifest": "' + str(path) + '"' in result.stdout


def test_verbose_twice_shows_traceback(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text("nodes: 3\n")
    quiet = invoke("validate", str(path))
    loud = invoke("validate", str(path), "-vv")
    assert "Traceback" not in quiet.stderr
    assert "Traceback" in loud.stderr
    assert quiet.exit_code == loud.exit_code == 3


def test_a_coordinator_on_this_machine_may_use_loopback_rpc_servers(tmp_path: Path) -> None:
    """Over SSH to 127.0.0.1 or with `address: local`, the node's loopback is the rpc-servers' loopback."""
    path = tmp_path / "cluster.yaml"
    path.write_text(
        "nodes:\n  - {name: ssh-here, address: 127.0.0.1}\n  - {name: here, address: local, rpc: {}}\n"
        "models:\n  - {name: a, coordinator: ssh-here}\n  - {name: b, coordinator: here}\n"
    )
    result = invoke("validate", str(path))
    assert result.exit_code == 0
    assert result.stderr.splitlines()[0] == f"✓ {path} is valid: cluster 'cluster'"
