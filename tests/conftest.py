"""Shared fixtures. Every module in tests/harness/ is a pytest plugin (real sshd hosts, llama.cpp, models,
the Ollama stand-in); they are loaded here so test files just name the fixtures they need."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = sorted(
    f"tests.harness.{path.stem}"
    for path in (Path(__file__).parent / "harness").glob("*.py")
    if not path.stem.startswith("_")
)


# Fixed loopback ports that real tests bind on this machine (the localhost example and `sollol demo`, and
# test_local). They lie in Linux's ephemeral range, so a client connection of an earlier test may hold one as
# its local port (TIME_WAIT lasts a minute), and rpc-server then exits without a word. Reserving them keeps
# the kernel from handing them out as ephemeral ports; the old setting comes back after the session.
RESERVED_PORTS = "50052-50053,50252"
_RESERVED_PORTS_SYSCTL = Path("/proc/sys/net/ipv4/ip_local_reserved_ports")


@pytest.fixture(scope="session", autouse=True)
def _reserved_test_ports() -> Iterator[None]:
    try:
        before = _RESERVED_PORTS_SYSCTL.read_text().strip()
        _RESERVED_PORTS_SYSCTL.write_text(",".join(filter(None, [before, RESERVED_PORTS])) + "\n")
    except OSError:  # not root, or no such sysctl: the tests still run, only this guard is missing
        yield
        return
    try:
        yield
    finally:
        _RESERVED_PORTS_SYSCTL.write_text((before or "") + "\n")


@pytest.fixture(autouse=True)
def _isolated_state(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Each test gets its own state dir and never reads the user's manifest or ssh config by accident."""
    state = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("SOLLOL_STATE_DIR", str(state))
    monkeypatch.delenv("SOLLOL_MANIFEST", raising=False)
    monkeypatch.delenv("LLAMA_SERVER_PATH", raising=False)  # the original SOLLOL's name, honoured as a fallback
    yield state
