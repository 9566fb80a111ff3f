"""sollol's systemd path against real systemd (nodes booted with systemd-nspawn, see
tests/harness/systemdnodes.py): system units as root, user units as a lingering non-root user, a killed
rpc-server restarted by systemd, a rebooted node coming back with its services, `down` removing the units.

The tests build on each other (one set of booted nodes for the module): root's cluster `sys` and the user's
cluster `usr` run side by side on every node, on different ports.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness.llama import bin_dir_of, hello
from tests.harness.sshhosts import TestNode
from tests.harness.systemdnodes import NODE_USER, SystemdNodes
from tests.unit.cli_helpers import invoke

pytestmark = [pytest.mark.real, pytest.mark.slow]

SYSTEM_PORT, USER_PORT = 50452, 50462
SYSTEM_UNIT = f"sollol-sys-rpc-{SYSTEM_PORT}.service"
USER_UNIT = f"sollol-usr-rpc-{USER_PORT}.service"
USER_SYSTEMCTL = f"runuser -u {NODE_USER} -- env XDG_RUNTIME_DIR=/run/user/$(id -u {NODE_USER}) systemctl --user"


@dataclass
class Lab:
    nodes: SystemdNodes
    system: Path  # manifest of cluster `sys`, logged in as root
    user: Path  # manifest of cluster `usr`, logged in as the lingering user

    def sh(self, node: TestNode, command: str) -> str:
        return self.nodes.exec_in(node, command, check=False).stdout.strip()


def up(manifest: Path) -> dict:  # type: ignore[type-arg]
    result = invoke("up", str(manifest), "--json")
    data = json.loads(result.stdout)
    assert result.exit_code == 0, [n["failures"] for n in data["nodes"]]
    assert data["not_persistent"] == []  # units: nothing to warn about
    return data  # type: ignore[no-any-return]


def wait_for(what: str, condition, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    """Poll `condition` until true (an event we can only observe by asking), failing after `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def lab(systemd_nodes: SystemdNodes, llama_bins, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("systemd-lab")
    extra = f"llama_cpp:\n  bin_dir: {bin_dir_of(llama_bins, tmp)}\n"
    system, user = tmp / "sys.yaml", tmp / "usr.yaml"
    roles = {n.name: f"rpc: {{port: {SYSTEM_PORT}}}" for n in systemd_nodes.nodes}
    system.write_text(systemd_nodes.manifest_yaml(roles, name="sys", extra=extra))
    roles = {n.name: f"rpc: {{port: {USER_PORT}}}" for n in systemd_nodes.nodes}
    user.write_text(systemd_nodes.manifest_yaml(roles, user=NODE_USER, name="usr", extra=extra))
    yield Lab(systemd_nodes, system, user)
    invoke("down", str(system))
    invoke("down", str(user))


def test_up_as_root_installs_system_units(lab: Lab) -> None:
    data = up(lab.system)
    assert [n["status"] for n in data["nodes"]] == ["changed"] * len(lab.nodes.nodes)
    assert {s["manager"] for n in data["nodes"] for s in n["services"]} == {"systemd-system"}
    for node in lab.nodes.nodes:
        assert lab.sh(node, f"systemctl is-enabled {SYSTEM_UNIT}; systemctl is-active {SYSTEM_UNIT}") == (
            "enabled\nactive"
        )
        assert Path(f"{lab.nodes.root_of(node)}/etc/systemd/system/{SYSTEM_UNIT}").is_file()
        assert hello(node.address, SYSTEM_PORT) is not None


def test_up_as_lingering_user_installs_user_units(lab: Lab) -> None:
    data = up(lab.user)
    assert [n["status"] for n in data["nodes"]] == ["changed"] * len(lab.nodes.nodes)
    assert {s["manager"] for n in data["nodes"] for s in n["services"]} == {"systemd-user"}
    for node in lab.nodes.nodes:
        assert lab.sh(node, f"{USER_SYSTEMCTL} is-enabled {USER_UNIT}; {USER_SYSTEMCTL} is-active {USER_UNIT}") == (
            "enabled\nactive"
        )
        unit = Path(f"{lab.nodes.root_of(node)}/home/{NODE_USER}/.config/systemd/user/{USER_UNIT}")
        assert unit.is_file()
        assert unit.stat().st_uid != 0  # the user's own file, not root's
        assert hello(node.address, USER_PORT) is not None


def test_killed_rpc_server_is_restarted_by_systemd(lab: Lab) -> None:
    node = lab.nodes.nodes[0]
    show = f"systemctl show -p MainPID -p NRestarts -p ActiveState {SYSTEM_UNIT}"

    def unit() -> dict[str, str]:
        return dict(line.split("=", 1) for line in lab.sh(node, show).splitlines())

    assert unit()["ActiveState"] == "active" and unit()["NRestarts"] == "0"
    # SIGKILL (a crash, the OOM killer), then SIGTERM from outside (systemd counts that as a clean exit,
    # like rpc-server's exit 0 when it cannot bind): both times systemd starts it again
    for restarts, signal in ((1, "KILL"), (2, "TERM")):
        lab.sh(node, f"kill -{signal} {unit()['MainPID']}")

        def back(restarts: int = restarts) -> bool:
            now = unit()
            restarted = now["NRestarts"] == str(restarts) and now["ActiveState"] == "active"
            return restarted and hello(node.address, SYSTEM_PORT) is not None

        wait_for(f"systemd to restart the rpc-server after SIG{signal}", back)
    result = invoke("status", "--manifest", str(lab.system), "--json")
    assert result.exit_code == 0, result.stdout
    rows = {(r["node"], r["kind"]): r["reachable"] for r in json.loads(result.stdout)["backends"]}
    assert rows == {(n.name, "rpc"): "yes" for n in lab.nodes.nodes}


def test_rebooted_node_comes_back_with_its_services(lab: Lab) -> None:
    node = lab.nodes.nodes[1]
    lab.nodes.reboot(node)
    # enabled units start at boot: the system unit, and the user unit with the lingering user's manager
    wait_for("the system unit after reboot", lambda: hello(node.address, SYSTEM_PORT) is not None)
    wait_for("the user unit after reboot", lambda: hello(node.address, USER_PORT) is not None)
    for manifest in (lab.system, lab.user):
        data = up(manifest)
        assert [n["status"] for n in data["nodes"]] == ["unchanged"] * len(lab.nodes.nodes), data


def test_down_removes_the_units(lab: Lab) -> None:
    for manifest in (lab.system, lab.user):
        result = invoke("down", str(manifest), "--json")
        assert result.exit_code == 0, result.stdout
    for node in lab.nodes.nodes:
        root = lab.nodes.root_of(node)
        assert not Path(f"{root}/etc/systemd/system/{SYSTEM_UNIT}").exists()
        assert not Path(f"{root}/home/{NODE_USER}/.config/systemd/user/{USER_UNIT}").exists()
        assert lab.sh(node, f"systemctl is-active {SYSTEM_UNIT}; {USER_SYSTEMCTL} is-active {USER_UNIT}") == (
            "inactive\ninactive"
        )
        units = (
            f"systemctl list-unit-files --no-legend 'sollol-*'; {USER_SYSTEMCTL} list-unit-files --no-legend 'sollol-*'"
        )
        assert lab.sh(node, units) == ""
        listening = lab.sh(node, "ss -ltnH")
        assert f":{SYSTEM_PORT}" not in listening and f":{USER_PORT}" not in listening
