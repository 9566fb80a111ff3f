"""The pinned llama-cpp-python source distribution, which vendors the llama.cpp tree sollol builds from."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

from sollol_cli.errors import BuildError
from sollol_cli.files import write_atomic

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
LLAMA_CPP_COMMIT = "0c1e57098"
RPC_PROTOCOL_VERSION = (7, 0, 0)
SDIST_NAME = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"
VENDOR_PREFIX = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}/vendor/llama.cpp/"


def sdist_dir(cache_dir: Path) -> Path:
    return cache_dir / "sdist"


def ensure_sdist(cache_dir: Path) -> Path:
    """Return the path of the pinned sdist tarball, downloading it with pip on first use (~77 MB)."""
    target = sdist_dir(cache_dir) / SDIST_NAME
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
        f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}", "-d", str(target.parent),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not target.is_file():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise BuildError(
            f"could not download llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION} with pip: {last}",
            hint="check that this machine can reach the Python package index",
        )
    return target


def extract_vendor_file(tarball: Path, relative: str, dest: Path) -> Path:
    """Copy one file of the vendored llama.cpp tree (e.g. `models/ggml-vocab-llama-spm.gguf`) to `dest`."""
    with tarfile.open(tarball) as tar:
        member = tar.extractfile(VENDOR_PREFIX + relative)
        if member is None:
            raise BuildError(f"{relative} is missing from {tarball.name}")
        write_atomic(dest, member.read())
    return dest
