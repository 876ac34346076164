"""One trial per GPU: device detection and each local worker's device (placement tested on CPU:
nvidia-smi's output and the GPU lists are made up; no GPU was used)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from sweep import gpus
from sweep.errors import SweepError

SMI = """GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-4b5c6d7e-0000-1111-2222-333344445555)
GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-8f9e0d1c-0000-1111-2222-333344445555)
"""
SMI_MIG = """GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-aaaa0000-0000-1111-2222-333344445555)
  MIG 3g.20gb     Device  0: (UUID: MIG-11112222-3333-4444-5555-666677778888)
  MIG 3g.20gb     Device  1: (UUID: MIG-99990000-3333-4444-5555-666677778888)
GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-bbbb0000-0000-1111-2222-333344445555)
"""


def test_nvidia_smi_output_gives_gpu_indices_and_mig_instances_in_place_of_their_gpu():
    assert gpus.parse_nvidia_smi(SMI) == ["0", "1"]
    assert gpus.parse_nvidia_smi(SMI_MIG) == ["MIG-11112222-3333-4444-5555-666677778888",
                                              "MIG-99990000-3333-4444-5555-666677778888", "1"]
    assert gpus.parse_nvidia_smi("") == []
    assert gpus.parse_nvidia_smi("NVIDIA-SMI has failed because it couldn't communicate with the driver.") == []


def test_workers_go_round_robin_over_the_gpus():
    assert gpus.assign_devices(4, ["0", "1"]) == ["0", "1", "0", "1"]
    assert gpus.assign_devices(2, ["0", "1", "2"]) == ["0", "1"]
    assert gpus.assign_devices(3, []) == [None, None, None]


@pytest.mark.parametrize(("env", "smi", "expected"), [
    ({}, ["0", "1"], ["0", "1"]),                                  # auto: nvidia-smi
    ({}, [], []),                                                   # auto, no GPU (this machine)
    ({"SWEEP_GPUS": "auto"}, ["0"], ["0"]),
    ({"SWEEP_GPUS": "none"}, ["0", "1"], []),                       # placement off
    ({"SWEEP_GPUS": "2, 3"}, ["0", "1"], ["2", "3"]),               # explicit list wins
    ({"CUDA_VISIBLE_DEVICES": "1,3"}, ["0", "1", "2", "3"], ["1", "3"]),  # already restricted: stay inside
    ({"CUDA_VISIBLE_DEVICES": ""}, ["0", "1"], []),                 # GPUs hidden on purpose
    ({"CUDA_VISIBLE_DEVICES": "-1"}, ["0", "1"], []),
])
def test_detect_gpus(env, smi, expected):
    assert gpus.detect_gpus(env, list_devices=lambda: smi) == expected


@pytest.mark.parametrize("raw", ["0;1", "gpu0", "0,,x"])
def test_a_malformed_sweep_gpus_is_one_clear_error(raw):
    with pytest.raises(SweepError, match=r"^SWEEP_GPUS=.*is not a device index or UUID; use auto, none, or e\.g\. 0,1"):
        gpus.detect_gpus({"SWEEP_GPUS": raw}, list_devices=lambda: [])


def test_nvidia_smi_missing_means_no_gpus(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert gpus.nvidia_smi_devices() == []


def _opened(tmp_path):
    data = tmp_path / "d.npz"
    data.write_bytes(b"")
    return SimpleNamespace(prep=SimpleNamespace(name="ecg", data=SimpleNamespace(source=str(data))))


def test_each_local_worker_gets_its_own_gpu(tmp_path, monkeypatch):
    from sweep.workers import worker_launches

    monkeypatch.delenv("SWEEP_GPUS", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(gpus, "nvidia_smi_devices", lambda: ["0", "1", "2"])
    launches = worker_launches(_opened(tmp_path), workers=3, threads=1, env={"SWEEP_STORAGE": "sqlite:///x.db"})
    assert [env["CUDA_VISIBLE_DEVICES"] for _, env in launches] == ["0", "1", "2"]
    for command, env in launches:
        assert command[1:4] == ["-m", "sweep", "worker"] and "ecg" in command
        assert env["SWEEP_STORAGE"] == "sqlite:///x.db" and env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
        assert env["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"


def test_more_workers_than_gpus_share_them_and_no_gpu_changes_nothing(tmp_path, monkeypatch):
    from sweep.workers import worker_launches

    monkeypatch.setenv("SWEEP_GPUS", "0,1")
    launches = worker_launches(_opened(tmp_path), workers=4, threads=1, env={})
    assert [env["CUDA_VISIBLE_DEVICES"] for _, env in launches] == ["0", "1", "0", "1"]
    monkeypatch.setenv("SWEEP_GPUS", "none")
    base = {"PATH": "/usr/bin"}
    assert [env for _, env in worker_launches(_opened(tmp_path), workers=2, threads=1, env=base)] == [base, base]


def test_inside_a_restricted_set_the_callers_device_order_is_kept():
    envs = gpus.worker_envs({"CUDA_VISIBLE_DEVICES": "2,3"}, 2, ["2", "3"])
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["2", "3"]
    assert all("CUDA_DEVICE_ORDER" not in e for e in envs)


def test_sweep_run_refuses_a_malformed_sweep_gpus_before_opening_the_study(tmp_path, tiny_signal):
    import os
    import subprocess
    import sys

    env = {**os.environ, "SWEEP_GPUS": "first"}
    proc = subprocess.run([sys.executable, "-m", "sweep", "run", str(tiny_signal), "--workers", "2",
                           "--storage", f"sqlite:///{tmp_path}/s.db", "--tracking-uri", f"sqlite:///{tmp_path}/m.db"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: SWEEP_GPUS='first'")
    assert not (tmp_path / "s.db").exists()


def test_the_gpu_requirements_are_pyprojects_with_tensorflows_cuda_build_for_tensorflow_cpu():
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    lines = [line.strip() for line in (root / "requirements-gpu.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    cpu = [d for d in deps if d.startswith("tensorflow-cpu")]
    assert len(cpu) == 1
    assert lines == [cpu[0].replace("tensorflow-cpu", "tensorflow[and-cuda]")] + [d for d in deps if d not in cpu]
