"""What a sharded model's coordinator did for one request, as the lines `sollol run -v` and the demo show."""

from __future__ import annotations

from collections.abc import Sequence

from sollol_cli import events


def _on(node: str | None) -> str:
    return f" on node {node}" if node else ""


def narrative(event: events.Event) -> list[str]:
    """The lines for one event (placement lines follow a start or a reuse); none for other events."""
    if isinstance(event, events.CoordinatorStarted):
        head = f"started a coordinator{_on(event.node)} (pid {event.pid}), loaded in {event.ready_after_s:.1f} s"
        return [head, *event.placement, *([event.speed] if event.speed else [])]
    if isinstance(event, events.CoordinatorReused):
        head = f"reused the running coordinator{_on(event.node)} (pid {event.pid}, port {event.port})"
        return [head, *event.placement, *([event.speed] if event.speed else [])]
    if isinstance(event, events.CoordinatorMoved):
        return [f"moved the coordinator off {event.was} (the manifest says {event.now})"]
    if isinstance(event, events.CoordinatorOutdated):
        return [f"replaced the coordinator: the manifest no longer has its rpc backends {', '.join(event.gone)}"]
    if isinstance(event, events.CoordinatorExited):
        return [f"the previous coordinator had exited: {event.log}"]
    if isinstance(event, events.CoordinatorAbandoned):
        return [f"stopped a coordinator nobody was serving from (pid {event.pid}: left loading, or unrecorded)"]
    if isinstance(event, events.CoordinatorFailed):
        return [f"the coordinator failed ({event.log}); re-planning"]
    if isinstance(event, events.CoordinatorEvicted):
        return [f"unloaded '{event.model}' to free the rpc-servers (they serve one model at a time)"]
    return []


def placement(happened: Sequence[events.Event]) -> list[str]:
    """The layer placement of each coordinator that served the request (one, unless it was replaced)."""
    lines: list[str] = []
    for event in happened:
        if isinstance(event, events.CoordinatorStarted | events.CoordinatorReused):
            lines.extend(event.placement)
    return lines
