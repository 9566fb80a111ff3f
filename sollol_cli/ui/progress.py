"""Live per-subject progress for core events (nodes, builds, scans); plain lines when not a terminal."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from rich.live import Live
from rich.markup import escape
from rich.table import Table

from sollol_cli import events
from sollol_cli.ui.console import err, interactive, report_warnings


@dataclass
class _Row:
    step: str = ""
    detail: str = ""
    state: str = "running"  # running | done | failed
    completed: float | None = None
    total: float | None = None


@dataclass
class StepDisplay:
    """Keeps one row per subject and re-renders on each event."""

    title: str
    rows: dict[str, _Row] = field(default_factory=dict)
    quiet: bool = False
    live: Live | None = None

    def __call__(self, event: events.Event) -> None:
        if isinstance(event, events.Warning):
            report_warnings(event)
            return
        subject = getattr(event, "subject", "")
        row = self.rows.setdefault(subject, _Row())
        line: str | None = None
        if isinstance(event, events.StepStarted):
            row.step, row.detail, row.state, row.completed, row.total = (
                event.step,
                event.detail,
                "running",
                None,
                None,
            )
            line = f"{subject}: {event.step}" + (f" {event.detail}" if event.detail else "")
        elif isinstance(event, events.StepProgress):
            row.step, row.completed, row.total = event.step, event.completed, event.total
            row.detail = event.detail or row.detail
        elif isinstance(event, events.StepDone):
            row.step, row.detail, row.state = event.step, event.detail, "done"
            line = f"{subject}: {event.step} done" + (f" ({event.detail})" if event.detail else "")
        elif isinstance(event, events.StepFailed):
            row.step, row.detail, row.state = event.step, event.reason, "failed"
            line = f"{subject}: {event.step} failed: {event.reason}"
        if self.live is not None:
            self.live.update(self.render())
        elif line is not None and not self.quiet:
            err().print(escape(line), highlight=False)

    def render(self) -> Table:
        table = Table(title=self.title, title_justify="left", box=None, show_header=False, pad_edge=False)
        table.add_column("subject", style="bold")
        table.add_column("state")
        table.add_column("step")
        table.add_column("detail", overflow="fold")
        marks = {"running": "[cyan]…[/]", "done": "[green]✓[/]", "failed": "[red]✗[/]"}
        for subject, row in self.rows.items():
            detail = escape(row.detail)
            if row.completed is not None and row.state == "running":
                pct = f"{100 * row.completed / row.total:.0f}%" if row.total else f"{row.completed:.0f}"
                detail = f"{pct} {detail}".strip()
            table.add_row(escape(subject), marks[row.state], escape(row.step), detail)
        return table


@contextmanager
def step_display(title: str, *, quiet: bool = False) -> Iterator[events.Reporter]:
    """A reporter that renders a live table on a terminal, one plain line per step otherwise."""
    display = StepDisplay(title=title, quiet=quiet)
    if quiet or not interactive():
        yield display
        return
    with Live(display.render(), console=err(), refresh_per_second=8, transient=False) as live:
        display.live = live
        yield display
        live.update(display.render())
