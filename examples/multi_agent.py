#!/usr/bin/env python3
"""A multi-agent workflow on a sollol cluster: ten agents, each with its own role, ask their questions in
parallel through one `AsyncCluster`; sollol spreads them over the backends by free slots. A last agent
then reads every answer and writes the summary.

    python examples/multi_agent.py cluster.yaml --model llama3.2

It prints which backend answered each agent, the wall time, and the backend time the answers took
together: about what one node would need answering them one after another.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from dataclasses import dataclass

from sollol_cli import AsyncCluster, ChatResponse

ROLES = [
    "researcher", "skeptic", "engineer", "economist", "historian",
    "designer", "lawyer", "teacher", "operator", "poet",
]  # fmt: skip
TOPIC = "Should a small lab run its language models on its own machines?"


@dataclass
class Answer:
    role: str
    reply: ChatResponse
    seconds: float

    @property
    def backend(self) -> str:
        served = self.reply.sollol
        return served.backend if served is not None and served.backend else "?"


async def ask(cluster: AsyncCluster, model: str, role: str, num_predict: int) -> Answer:
    started = time.monotonic()
    reply = await cluster.chat(
        model,
        [
            {"role": "system", "content": f"You are the team's {role}. Answer in two sentences."},
            {"role": "user", "content": TOPIC},
        ],
        options={"num_predict": num_predict, "temperature": 0},
    )
    return Answer(role, reply, time.monotonic() - started)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest", nargs="?", help="cluster manifest (default: ./cluster.yaml, $SOLLOL_MANIFEST)")
    parser.add_argument("--model", help="model to ask (default: the manifest's first model)")
    parser.add_argument("--agents", type=int, default=10, help="how many agents ask at once")
    parser.add_argument("--num-predict", type=int, default=64, help="tokens per answer at most")
    args = parser.parse_args()

    async with AsyncCluster(args.manifest) as cluster:
        model = args.model or (cluster.cluster.models[0].name if cluster.cluster.models else None)
        if model is None:
            parser.error("the manifest lists no models: pass --model")
        roles = [ROLES[i % len(ROLES)] for i in range(args.agents)]
        started = time.monotonic()
        answers = await asyncio.gather(*(ask(cluster, model, role, args.num_predict) for role in roles))
        for number, answer in enumerate(answers, 1):
            text = " ".join((answer.reply.message.content or "").split())
            print(f"agent {number:2} {answer.role:<10} <- {answer.backend:<12} {answer.seconds:6.2f} s  {text[:60]}")
        notes = "\n".join(f"- {a.role}: {a.reply.message.content}" for a in answers)
        summary = await cluster.chat(
            model,
            [{"role": "user", "content": f"Summarise the team's view on: {TOPIC}\n{notes}"}],
            options={"num_predict": args.num_predict, "temperature": 0},
        )
        wall = time.monotonic() - started
    served = summary.sollol.backend if summary.sollol else "?"
    print(f"summary <- {served}: {' '.join((summary.message.content or '').split())[:200]}")
    spread = ", ".join(f"{name}: {count}" for name, count in sorted(Counter(a.backend for a in answers).items()))
    backend_s = sum((a.reply.total_duration or 0) for a in answers) / 1e9
    print(
        f"{len(answers)} agents and the summary in {wall:.2f} s over {spread}; the agents' answers took "
        f"{backend_s:.2f} s of backend time, about what one node answering one at a time would need"
    )


if __name__ == "__main__":
    asyncio.run(main())
