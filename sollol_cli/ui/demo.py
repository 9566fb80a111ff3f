"""How `sollol demo` reports what it showed."""

from __future__ import annotations

from rich.markup import escape

from sollol_cli.demo.run import DemoResult
from sollol_cli.ui.console import out
from sollol_cli.ui.coordinators import placement

TITLES = {
    "shard": "sharded: the model split by layers over two rpc-servers",
    "distribute": "distributed: the whole model on one llama-server",
}


def print_demo(result: DemoResult) -> None:
    console = out()
    console.print(
        f"[bold]model[/]: {escape(str(result.model))}"
        + (" (sollol's tiny random-weight demo model)" if result.demo_model else "")
    )
    console.print(f"[bold]llama.cpp binaries[/]: {escape(result.binaries)}")
    for item in result.results:
        console.print()
        console.print(f"[bold]{escape(item.model)}[/] — {TITLES.get(item.mode, item.mode)}")
        for line in placement(item.narrative):
            console.print(f"  {escape(line)}")
        speed = f"{item.tokens_per_s:.1f} tokens/s" if item.tokens_per_s else "speed unknown"
        first = f", first token after {item.ttft_s * 1000:.0f} ms" if item.ttft_s is not None else ""
        console.print(f"  speed: {speed} ({item.tokens or '?'} tokens{first})")
        console.print(f"  answer: {escape(item.answer.strip()[:300])}")
    console.print()
    if result.demo_model:
        console.print("Note: the demo model has random weights, so its answers are gibberish by design.")
    console.print(
        "Note: on one machine sharding is slower, not faster. It buys memory (a model too big for any one node "
        "runs at all), not speed."
    )
    if result.kept:
        console.print(
            f"\nThe localhost cluster is still running ({escape(str(result.manifest))}). Next:\n"
            f"  sollol serve -f {escape(str(result.manifest))}      # then point any Ollama client at http://127.0.0.1:11434\n"
            f"  sollol run demo-sharded 'hello' -f {escape(str(result.manifest))}\n"
            f"  sollol down {escape(str(result.manifest))}           # stop everything"
        )
    else:
        console.print("\nEverything the demo started is stopped again (use --keep to leave it running).")
