"""The GPU in asv's machine record.

``asv machine`` records the CPU, the OS and the memory, never a GPU — yet on a GPU machine the
GPU, its CUDA and cuDNN decide every number. asv copies whatever its machine entry in
``~/.asv-machine.json`` holds into the ``params`` of each result and onto the published pages,
so the GPU is written there, next to asv's own fields.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from convbench.env import gpu_info

__all__ = ["gpu_fields", "machine_file", "record_machine"]


def machine_file() -> Path:
    """Where asv keeps its machine entries (it reads ``~`` from ``HOME``)."""
    return Path(os.path.expanduser("~/.asv-machine.json"))


def gpu_fields() -> dict[str, str]:
    """The GPU, CUDA, cuDNN and driver, as asv's string fields ("none" without a GPU)."""
    gpu = gpu_info()
    if gpu is None:
        return {"gpu": "none", "cuda": "none", "cudnn": "none", "gpu_driver": "none"}
    cudnn = gpu["cudnn"]
    return {
        "gpu": f"{gpu['count']}x {gpu['name']} (sm_{gpu['capability'].replace('.', '')}, "
        f"{gpu['memory_bytes'] / 2**30:.0f} GiB)",
        "cuda": str(gpu["cuda"]),
        "cudnn": f"{cudnn // 10000}.{cudnn // 100 % 100}.{cudnn % 100}" if cudnn else "none",
        "gpu_driver": gpu["driver"] or "unknown",
    }


def record_machine(machine: str | None = None) -> dict[str, str]:
    """``asv machine --yes`` for this machine, then its GPU fields added to the entry.

    Returns the entry as saved. Raises ``RuntimeError`` with asv's own message if asv fails.
    """
    name = machine or platform.node()
    cmd = [sys.executable, "-m", "asv", "machine", "--yes", "--machine", name]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise RuntimeError(f"asv machine failed: {lines[-1] if lines else done.returncode}")
    path = machine_file()
    data = json.loads(path.read_text())
    data[name].update(gpu_fields())
    path.write_text(json.dumps(data, indent=4, sort_keys=True) + "\n")
    return data[name]
