"""One trial per GPU: which devices this machine has, and which one each local worker gets.

``sweep run --workers N`` starts N ``sweep worker`` processes; on a machine with GPUs each gets
its own device through ``CUDA_VISIBLE_DEVICES`` (round-robin: worker i gets device i mod G), so
TensorFlow in that process sees exactly one GPU. More workers than GPUs share them in turn, with
``TF_FORCE_GPU_ALLOW_GROWTH`` so the second process on a device is not refused the memory the
first took at start-up.

``SWEEP_GPUS`` chooses the devices:

* ``auto`` (default): the devices ``CUDA_VISIBLE_DEVICES`` already names, else those
  ``nvidia-smi -L`` lists (MIG instances in place of their parent GPU), else none;
* ``none``: no placement (every worker inherits the environment as it is);
* a comma-separated list of device indices or UUIDs (``0,2`` or ``GPU-4b...``).

Pure apart from :func:`nvidia_smi_devices`, which runs ``nvidia-smi -L``.
"""

from __future__ import annotations

import os
import re
import subprocess
from typing import Callable, Mapping

from sweep.errors import ConfigError

ENV = "SWEEP_GPUS"
_DEVICE = re.compile(r"^(\d+|(GPU|MIG)-[0-9A-Za-z/-]+)$")
_GPU_LINE = re.compile(r"^GPU (\d+): .*\(UUID: (GPU-[^)]+)\)")
_MIG_LINE = re.compile(r"^\s+MIG .*\(UUID: (MIG-[^)]+)\)")


def parse_nvidia_smi(output: str) -> list[str]:
    """Device names from ``nvidia-smi -L``: each GPU's index, or its MIG instances' UUIDs."""
    devices: list[str] = []
    for line in output.splitlines():
        gpu = _GPU_LINE.match(line)
        if gpu:
            devices.append(gpu.group(1))
            continue
        mig = _MIG_LINE.match(line)
        if mig and devices:
            if not devices[-1].startswith("MIG-"):
                devices.pop()  # a GPU split into MIG instances is used through them only
            devices.append(mig.group(1))
    return devices


def nvidia_smi_devices(timeout: float = 10.0) -> list[str]:
    """The devices ``nvidia-smi -L`` lists; none when it is missing or fails (no driver, no GPU)."""
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return []
    return parse_nvidia_smi(out.stdout) if out.returncode == 0 else []


def _device_list(raw: str, source: str) -> list[str]:
    devices = [d.strip() for d in raw.split(",") if d.strip()]
    bad = [d for d in devices if not _DEVICE.match(d)]
    if bad:
        raise ConfigError(
            f"{source}={raw!r}: {bad[0]!r} is not a device index or UUID; use auto, none, or e.g. 0,1"
        )
    return devices


def detect_gpus(environ: Mapping[str, str] | None = None,
                list_devices: Callable[[], list[str]] | None = None) -> list[str]:
    """The GPUs local workers are placed on (empty: run them as they are, e.g. on CPU).

    Raises:
        ConfigError: ``SWEEP_GPUS`` is neither auto, none nor a list of device indices/UUIDs.
    """
    env = os.environ if environ is None else environ
    choice = env.get(ENV, "auto").strip()
    if choice.lower() == "none":
        return []
    if choice.lower() not in ("auto", ""):
        return _device_list(choice, ENV)
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        # Already restricted by the user or a scheduler; "" or -1 hides every GPU.
        if visible.strip() in ("", "-1"):
            return []
        return _device_list(visible, "CUDA_VISIBLE_DEVICES")
    return (list_devices or nvidia_smi_devices)()


def assign_devices(workers: int, gpus: list[str]) -> list[str | None]:
    """The device of each of ``workers`` local workers: round-robin over ``gpus`` (None: no GPUs)."""
    if not gpus:
        return [None] * workers
    return [gpus[i % len(gpus)] for i in range(workers)]


def worker_envs(base: Mapping[str, str], workers: int, gpus: list[str]) -> list[dict[str, str]]:
    """The environment of each local worker process: ``base`` plus its own ``CUDA_VISIBLE_DEVICES``."""
    # Indices from nvidia-smi or SWEEP_GPUS are in its (PCI bus) order; indices the caller's own
    # CUDA_VISIBLE_DEVICES named keep the order that caller uses.
    inherited = "CUDA_VISIBLE_DEVICES" in base
    envs = []
    for device in assign_devices(workers, gpus):
        env = dict(base)
        if device is not None:
            env["CUDA_VISIBLE_DEVICES"] = device
            if not inherited:
                env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
            env.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
        envs.append(env)
    return envs
