"""Data parallel on CPU (gloo, two processes via torchrun) == one process with the doubled batch.

DDP with a replicated teacher runs in the fast suite; a teacher sharded with FSDP2 is slow-marked (more
collectives on a 2-core machine). FSDP of the trained model itself is accelerate's, which runs it on GPUs
only: it cannot be exercised here.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from otdistill.data import Example
from otdistill.training import distill_student
from tests.training.conftest import MAX_LENGTH, subprocess_env, tiny_config, write_job


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _torchrun(job: Path) -> dict[str, Any]:
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
        f"--master_port={_free_port()}", "-m", "otdistill.training", str(job),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=subprocess_env(threads=1), capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


DDP_CASES = [
    pytest.param({}, id="ddp"),
    pytest.param({"teacher_sharding": "fsdp"}, id="ddp-sharded-teacher", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("mode", DDP_CASES)
def test_two_processes_equal_one_process_with_double_batch(
    mode: dict[str, str], tiny_pair: tuple[Path, Path], examples: list[Example], tmp_path: Path
) -> None:
    """torchrun x2 (gloo, CPU), batch 2 each == one process, batch 4: loss parts and final weights."""
    teacher, student = tiny_pair
    common = {"max_steps": 3, "save_steps": 3, "learning_rate": 3e-3}
    dist_cfg = tiny_config(tmp_path / "dist", per_device_batch_size=2, **common, **mode)
    dist = _torchrun(write_job(tmp_path / "dist.yaml", "distill", dist_cfg, student, teacher))
    assert dist["record"]["world_size"] == 2
    assert dist["record"]["distributed"] == mode.get("distributed", "ddp")
    assert dist["record"]["teacher_sharding"] == mode.get("teacher_sharding", "replicate")

    single_cfg = tiny_config(tmp_path / "single", per_device_batch_size=4, **common)
    single = distill_student(single_cfg, student, teacher, examples, max_length=MAX_LENGTH)

    # the same global batches: the same loss parts at every step (gathered over both ranks)
    for a, b in zip(dist["history"], single.history, strict=True):
        for key in ("loss", "loss_ce", "loss_had", "loss_sl", "loss_sd"):
            assert abs(a[key] - b[key]) <= 1e-4 * max(1.0, abs(b[key])), (a["step"], key, a[key], b[key])
    w_dist = load_file(str(tmp_path / "dist" / "model" / "model.safetensors"))
    w_one = load_file(str(tmp_path / "single" / "model" / "model.safetensors"))
    initial = load_file(str(student / "model.safetensors"))
    assert w_dist.keys() == w_one.keys()
    for key in w_one:
        torch.testing.assert_close(w_dist[key], w_one[key], rtol=1e-4, atol=1e-5, msg=key)
    assert any(not torch.allclose(initial[k], w_one[k]) for k in w_one)
    # both ranks' RNG states are in the (atomically finalized) checkpoint
    ckpt = tmp_path / "dist" / "checkpoint-3"
    assert (ckpt / "rng_state_0.pth").is_file() and (ckpt / "rng_state_1.pth").is_file()
