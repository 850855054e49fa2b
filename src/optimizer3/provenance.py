"""Where a result came from: the command, the code version and the machine.

Written beside every meta-training run (`run.json`) and into every pretrained optimizer's card,
so that a figure can be traced to what produced it.
"""

from __future__ import annotations

import datetime
import os
import pathlib
import platform
import shlex
import subprocess
import sys
from typing import Any

import torch


def command_line(argv: list[str] | None = None) -> str:
    """The `optimizer3 ...` command as the user typed it (arguments re-quoted)."""
    args = sys.argv[1:] if argv is None else argv
    return " ".join(["optimizer3", *map(shlex.quote, args)])


def code_version() -> str:
    """The package version, plus the git commit when running from a checkout (".dirty" when
    the package's own source has uncommitted changes; edits to docs do not count)."""
    from optimizer3 import __version__

    source = pathlib.Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no", "--", "."],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__}+g{commit}" + (".dirty" if dirty else "")


def cpu_model(cpuinfo: pathlib.Path = pathlib.Path("/proc/cpuinfo")) -> str:
    """The CPU's model name, with its family and model numbers where /proc/cpuinfo gives them
    (virtual machines often report a bare "AMD EPYC" for different generations)."""
    try:
        fields: dict[str, str] = {}
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        fields = {}
    if "model name" not in fields:
        return platform.processor() or platform.machine()
    if "cpu family" in fields and "model" in fields:
        return f"{fields['model name']} (family {fields['cpu family']}, model {fields['model']})"
    return fields["model name"]


def machine() -> dict[str, Any]:
    """Where a figure was measured: enough to tell two machines apart."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": cpu_model(),
        # The vector instructions torch's CPU kernels use: machines that differ here round
        # differently (README, the MNIST table's experiment (e)).
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def describe_machine(info: dict[str, Any]) -> str:
    """`machine()` as one line of prose."""
    capability = f", {info['cpu_capability']}" if info.get("cpu_capability") else ""
    line = (f"{info['processor']}{capability}, {info['cpu_count']} CPUs, {info['torch_threads']} torch threads, "
            f"torch {info['torch']}")
    return line + (f", {info['gpu']}" if "gpu" in info else "")


def provenance(argv: list[str] | None = None) -> dict[str, Any]:
    """The command, code version, machine and UTC date, as a JSON-ready dict."""
    return {
        "command": command_line(argv),
        "code_version": code_version(),
        "machine": machine(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
