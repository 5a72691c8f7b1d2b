"""DDP on CPU (gloo, two processes via torchrun) gives the single-process result with the doubled batch."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from otdistill.data import Example
from otdistill.training import distill_student
from tests.training.conftest import MAX_LENGTH, subprocess_env, tiny_config, write_job


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_ddp_two_processes_equal_one_process_with_double_batch(
    tiny_pair: tuple[Path, Path], examples: list[Example], tmp_path: Path
) -> None:
    teacher, student = tiny_pair
    common = {"max_steps": 3, "save_steps": 3, "learning_rate": 3e-3}
    ddp_cfg = tiny_config(tmp_path / "ddp", per_device_batch_size=2, **common)
    job = write_job(tmp_path / "ddp.yaml", "distill", ddp_cfg, student, teacher)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
        f"--master_port={_free_port()}", "-m", "otdistill.training", str(job),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=subprocess_env(threads=1), capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ddp = json.loads(proc.stdout.strip().splitlines()[-1])

    single_cfg = tiny_config(tmp_path / "single", per_device_batch_size=4, **common)
    single = distill_student(single_cfg, student, teacher, examples, max_length=MAX_LENGTH)

    # the same global batches: the same loss parts at every step (gathered over both ranks)
    for a, b in zip(ddp["history"], single.history, strict=True):
        for key in ("loss", "loss_ce", "loss_had", "loss_sl", "loss_sd"):
            assert abs(a[key] - b[key]) <= 1e-4 * max(1.0, abs(b[key])), (a["step"], key, a[key], b[key])
    w_ddp = load_file(str(tmp_path / "ddp" / "model" / "model.safetensors"))
    w_one = load_file(str(tmp_path / "single" / "model" / "model.safetensors"))
    initial = load_file(str(student / "model.safetensors"))
    for key in w_one:
        torch.testing.assert_close(w_ddp[key], w_one[key], rtol=1e-4, atol=1e-5, msg=key)
    assert any(not torch.allclose(initial[k], w_one[k]) for k in w_one)
    # both ranks' RNG states are in the (atomically finalized) checkpoint
    ckpt = tmp_path / "ddp" / "checkpoint-3"
    assert (ckpt / "rng_state_0.pth").is_file() and (ckpt / "rng_state_1.pth").is_file()
