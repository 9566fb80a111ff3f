"""Process settings (not the cluster manifest): environment variables with the `SOLLOL_` prefix."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _xdg(var: str, fallback: str) -> Path:
    import os

    base = os.environ.get(var)
    return Path(base) if base else Path.home() / fallback


class Settings(BaseSettings):
    """Where sollol keeps its files and which binaries it uses; every field is `SOLLOL_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="SOLLOL_", extra="ignore")

    state_dir: Path = Field(default_factory=lambda: _xdg("XDG_STATE_HOME", ".local/state") / "sollol")
    cache_dir: Path = Field(default_factory=lambda: _xdg("XDG_CACHE_HOME", ".cache") / "sollol")
    manifest: Path | None = Field(default=None, description="Default manifest when ./cluster.yaml is absent.")
    llama_server_path: Path | None = Field(
        default=None,
        # LLAMA_SERVER_PATH is what the original SOLLOL documented; sollol's own name wins when both are set
        validation_alias=AliasChoices("SOLLOL_LLAMA_SERVER_PATH", "LLAMA_SERVER_PATH", "llama_server_path"),
        description="llama-server binary on the controller ($SOLLOL_LLAMA_SERVER_PATH, else $LLAMA_SERVER_PATH).",
    )
    rpc_server_path: Path | None = Field(default=None, description="rpc-server binary on the controller.")
    known_hosts: Path | None = Field(
        default=None,
        description="sollol's own known_hosts (accept-new policy); default state_dir/known_hosts.",
    )

    @property
    def known_hosts_path(self) -> Path:
        return self.known_hosts or self.state_dir / "known_hosts"


def env_name(field: str) -> str:
    """The environment variable a path setting came from, for messages (`llama_server_path` has two)."""
    import os

    own = f"SOLLOL_{field.upper()}"
    if field == "llama_server_path" and own not in os.environ and "LLAMA_SERVER_PATH" in os.environ:
        return "LLAMA_SERVER_PATH"
    return own


def load_settings() -> Settings:
    return Settings()
