"""What `sollol run -v` says about a sharded model's coordinator, from the typed events the shard manager
emits (the lines users have always seen)."""

from __future__ import annotations

import pytest

from sollol_cli import events
from sollol_cli.runtime.dispatch import Trace
from sollol_cli.ui.coordinators import narrative, placement
from sollol_cli.ui.run import stats_line

PLACEMENT = ("placement 10.0.0.1:50052: layers 0-3, model 4.2 MiB, KV 0.5 MiB",)


@pytest.mark.parametrize(
    ("event", "lines"),
    [
        (
            events.CoordinatorStarted("tiny", None, 41, 2.345, PLACEMENT),
            ["started a coordinator (pid 41), loaded in 2.3 s", *PLACEMENT],
        ),
        (
            events.CoordinatorStarted("tiny", "n3", 41, 2.0, ()),
            ["started a coordinator on node n3 (pid 41), loaded in 2.0 s"],
        ),
        (  # the split and its speed follow the placement
            events.CoordinatorStarted("tiny", None, 41, 2.0, PLACEMENT, "speed: split by memory"),
            ["started a coordinator (pid 41), loaded in 2.0 s", *PLACEMENT, "speed: split by memory"],
        ),
        (
            events.CoordinatorReused("tiny", "n3", 41, 8080, PLACEMENT),
            ["reused the running coordinator on node n3 (pid 41, port 8080)", *PLACEMENT],
        ),
        (
            events.CoordinatorMoved("tiny", "this machine", "node n3"),
            ["moved the coordinator off this machine (the manifest says node n3)"],
        ),
        (
            events.CoordinatorOutdated("tiny", ("127.0.0.1:50052", "127.0.0.1:50053")),
            ["replaced the coordinator: the manifest no longer has its rpc backends 127.0.0.1:50052, 127.0.0.1:50053"],
        ),
        (events.CoordinatorExited("tiny", "a | b"), ["the previous coordinator had exited: a | b"]),
        (events.CoordinatorFailed("tiny", "a | b"), ["the coordinator failed (a | b); re-planning"]),
        (
            events.CoordinatorAbandoned("tiny", 41),
            ["stopped a coordinator nobody was serving from (pid 41: left loading, or unrecorded)"],
        ),
        (
            events.CoordinatorEvicted("tiny", "other"),
            ["unloaded 'tiny' to free the rpc-servers (they serve one model at a time)"],
        ),
        (events.StepDone("x", "y"), []),
    ],
)
def test_narrative(event: events.Event, lines: list[str]) -> None:
    assert narrative(event) == lines


def test_run_verbose_lists_what_the_coordinator_did() -> None:
    trace = Trace("tiny", mode="shard", reason="shard (set in the manifest)", backend="coordinator:tiny")
    trace.events += [
        events.CoordinatorEvicted("old", "tiny"),
        events.CoordinatorStarted("tiny", None, 7, 1.0, PLACEMENT),
    ]
    assert stats_line(trace, {}, verbose=1).splitlines() == [
        "coordinator:tiny · shard",
        "  decision: shard (set in the manifest)",
        "  unloaded 'old' to free the rpc-servers (they serve one model at a time)",
        "  started a coordinator (pid 7), loaded in 1.0 s",
        f"  {PLACEMENT[0]}",
    ]
    assert stats_line(trace, {}, verbose=0) == "coordinator:tiny · shard"


def test_placement_of_each_coordinator_that_served() -> None:
    happened = [
        events.CoordinatorReused("tiny", None, 7, 1, ("placement a",)),
        events.CoordinatorFailed("tiny", "gone"),
        events.CoordinatorStarted("tiny", None, 8, 1.0, ("placement b",)),
    ]
    assert placement(happened) == ["placement a", "placement b"]
