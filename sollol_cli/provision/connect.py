"""How to reach a node: the manifest's SSH settings (with per-node overrides) -> a CommandRunner."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sollol_cli.manifest.models import Cluster, HostKeyPolicy, Node
from sollol_cli.settings import Settings
from sollol_cli.ssh.runner import CommandRunner, LocalRunner, SshRunner


@dataclass(frozen=True)
class SshTarget:
    node: str
    host: str
    port: int
    user: str
    identity_file: Path | None
    policy: HostKeyPolicy
    known_hosts: Path | None
    use_agent: bool
    use_ssh_config: bool
    connect_timeout: float


def ssh_target(cluster: Cluster, node: Node) -> SshTarget:
    """Per-node overrides win over the cluster-wide `ssh` section."""
    base, over = cluster.ssh, node.ssh
    identity = (over.identity_file if over and over.identity_file else None) or base.identity_file
    known = (over.known_hosts if over and over.known_hosts else None) or base.known_hosts
    return SshTarget(
        node=node.name,
        host=node.address,
        port=(over.port if over and over.port else None) or base.port,
        user=(over.user if over and over.user else None) or base.user,
        identity_file=Path(identity).expanduser() if identity else None,
        policy=(over.host_key_policy if over and over.host_key_policy else None) or base.host_key_policy,
        known_hosts=Path(known).expanduser() if known else None,
        use_agent=base.use_agent,
        use_ssh_config=base.use_ssh_config,
        connect_timeout=base.connect_timeout,
    )


def runner_factory(cluster: Cluster, settings: Settings):  # type: ignore[no-untyped-def]
    async def connect(node: Node) -> CommandRunner:
        if node.is_local:
            return LocalRunner(node.name)
        target = ssh_target(cluster, node)
        return await SshRunner.connect(
            target.node,
            target.host,
            target.port,
            target.user,
            client_keys=[target.identity_file] if target.identity_file else None,
            known_hosts_path=target.known_hosts,
            policy=target.policy.value,
            sollol_known_hosts=settings.known_hosts_path,
            use_agent=target.use_agent,
            use_ssh_config=target.use_ssh_config,
            connect_timeout=target.connect_timeout,
        )

    return connect
