"""llama-server's refusals of embeddings name the manifest key that turns them on, not a flag to pass."""

from __future__ import annotations

import json

import pytest

from sollol_cli.backends.base import BackendRef, UpstreamError
from sollol_cli.backends.llamacpp import embeddings_refusal
from sollol_cli.sharding.coordinator import CoordinatorRecord, backend_ref

OFF = UpstreamError("x", 501, "This server does not support embeddings. Start it with `--embeddings`")
NO_POOLING = UpstreamError("x", 400, "Pooling type 'none' is not OAI compatible. Please use a different pooling type")
NODE = BackendRef("n1", "llamacpp", "10.0.0.1", 8080, node="n1")
UNMANAGED = BackendRef("llamacpp@10.0.0.9:8080", "llamacpp", "10.0.0.9", 8080)
RECORD = CoordinatorRecord("big:13b", "d", 1, 1, "127.0.0.1", 41100, "/l", [], 0.0, 0.0, 300.0)
COORDINATOR = backend_ref(RECORD)


@pytest.mark.parametrize(
    ("ref", "exc", "message"),
    [
        (NODE, OFF, "this llama-server serves no embeddings; "
         "set 'embeddings: true' under node n1's llamacpp: in the manifest and run `sollol up`"),
        (COORDINATOR, OFF, "this llama-server serves no embeddings; "
         "set 'embeddings: true' on model 'big:13b' under models: in the manifest"),
        (UNMANAGED, OFF, "this llama-server serves no embeddings; "
         "sollol does not manage it: start it with --embeddings --pooling last"),
        (NODE, NO_POOLING, "its model declares no pooling, so it has no single vector per input; "
         "set 'pooling: last' under node n1's llamacpp: in the manifest and run `sollol up`"),
        (COORDINATOR, NO_POOLING, "its model declares no pooling, so it has no single vector per input; set 'pooling: last' on model 'big:13b' under models: in the manifest"),
    ],
)  # fmt: skip
def test_refusals_name_the_manifest_key(ref: BackendRef, exc: UpstreamError, message: str) -> None:
    out = embeddings_refusal(ref, exc)
    assert (out.status, out.upstream_message) == (exc.status, message)
    assert json.loads(out.body)["error"]["message"] == message


@pytest.mark.parametrize(
    "exc",
    [
        UpstreamError("x", 400, '"input" or "content" must be provided'),
        UpstreamError("x", 500, "input is too large to process. increase the physical batch size"),
        UpstreamError("x", 404, "File Not Found"),
    ],
)
def test_other_errors_stay_as_they_are(exc: UpstreamError) -> None:
    assert embeddings_refusal(NODE, exc) is exc
