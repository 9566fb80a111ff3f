"""Who holds a port a service could not bind (rpc-server exits without saying why)."""

from __future__ import annotations

import asyncio
import os
import socket

from sollol_cli.provision.apply import port_holder
from sollol_cli.ssh.runner import LocalRunner


def test_a_listener_is_named() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        said = asyncio.run(port_holder(LocalRunner("local"), "127.0.0.1", port))
    assert said is not None
    assert said.startswith(f"port {port} on 127.0.0.1 is taken (LISTEN 127.0.0.1:{port} -> 0.0.0.0:*, users:((")
    assert f"pid={os.getpid()}," in said and said.endswith("); free it or change the port")


def test_a_connection_using_it_as_its_local_port_is_named() -> None:
    with socket.socket() as server, socket.socket() as client:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server_port = server.getsockname()[1]
        client.connect(("127.0.0.1", server_port))
        local_port = client.getsockname()[1]
        said = asyncio.run(port_holder(LocalRunner("local"), "127.0.0.1", local_port))
    # the port may also be the local port of other connections (to other peers): a live one is named first
    assert said is not None and said.startswith(
        f"port {local_port} on 127.0.0.1 is taken (ESTAB 127.0.0.1:{local_port} -> "
    )


def test_a_free_port_holds_nothing() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert asyncio.run(port_holder(LocalRunner("local"), "127.0.0.1", port)) is None
