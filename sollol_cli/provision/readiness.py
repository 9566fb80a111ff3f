"""Is a started service really serving? Probed from the controller, the way clients will use it.

rpc-server: a HELLO handshake (it prints its banner and exits 0 when it cannot bind, so neither counts);
llama-server: `/health` 200; Ollama: `/api/version`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sollol_cli.provision.services import ServiceSpec


@dataclass(frozen=True)
class Readiness:
    ready: bool
    version: str | None = None
    detail: str = ""


async def probe_service(spec: ServiceSpec, *, timeout: float = 2.0) -> Readiness:
    host = spec.host if spec.host not in ("0.0.0.0", "::") else "127.0.0.1"
    if spec.ready == "rpc-hello":
        from sollol_cli.backends.rpc import probe_rpc

        rpc = await probe_rpc(host, spec.port, connect_timeout=timeout, reply_timeout=timeout)
        if rpc.state == "ready" and rpc.protocol is not None:
            return Readiness(True, ".".join(map(str, rpc.protocol)))
        if rpc.state == "busy":  # serving a coordinator (one client at a time): up, just not free to talk
            return Readiness(True, None, detail="busy: a coordinator is attached")
        return Readiness(False, detail=rpc.error or rpc.state)
    from sollol_cli.backends.base import BackendRef
    from sollol_cli.backends.http import Timeouts

    timeouts = Timeouts(connect=timeout, read=timeout, probe=timeout)
    if spec.ready == "llama-health":
        from sollol_cli.backends.llamacpp import LlamaServerBackend

        status = await LlamaServerBackend(BackendRef(spec.node, "llamacpp", host, spec.port), timeouts).probe()
    else:
        from sollol_cli.backends.ollama import OllamaBackend

        status = await OllamaBackend(BackendRef(spec.node, "ollama", host, spec.port), timeouts).probe()
    if status.ready:
        return Readiness(True, status.version)
    return Readiness(False, detail=status.error or "not ready")
