"""Resume after a real SIGKILL reaches the same weights as a run that was never interrupted."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from otdistill.data import Example
from otdistill.training import distill_student, verify_checkpoint
from tests.training.conftest import MAX_LENGTH, subprocess_env, tiny_config, write_job

STEPS, SAVE_EVERY = 16, 4  # 8 steps per epoch: the resumed run also crosses an epoch boundary


def _kill_after_first_checkpoint(job: Path, output_dir: Path, timeout: float = 240) -> int:
    """Start the job, SIGKILL it as soon as a complete checkpoint exists; return that checkpoint's step."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "otdistill.training", str(job)],
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            done = [
                p for p in output_dir.glob("checkpoint-*") if verify_checkpoint(p, check_hashes=False) is None
            ]
            if done:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
                return min(int(p.name.split("-")[1]) for p in done)
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.02)
        raise AssertionError("no checkpoint appeared in time")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigkill_then_resume_matches_uninterrupted(
    tiny_pair: tuple[Path, Path], examples: list[Example], tmp_path: Path
) -> None:
    """Killed in a subprocess (kill -9), resumed and compared in this process (same thread count)."""
    teacher, student = tiny_pair
    killed_dir, clean_dir = tmp_path / "killed", tmp_path / "clean"
    common = {"max_steps": STEPS, "save_steps": SAVE_EVERY, "resume": True}
    killed_cfg = tiny_config(killed_dir, **common)
    job = write_job(tmp_path / "killed.yaml", "distill", killed_cfg, student, teacher)

    killed_at = _kill_after_first_checkpoint(job, killed_dir)
    assert killed_at < STEPS
    assert not (killed_dir / "model").exists(), "the killed run must not have finished"

    resumed = distill_student(killed_cfg, student, teacher, examples, max_length=MAX_LENGTH)
    assert resumed.resumed_from is not None and resumed.global_step == STEPS
    assert int(Path(resumed.resumed_from).name.split("-")[1]) >= killed_at
    assert resumed.history[-1]["step"] == STEPS

    clean = distill_student(
        tiny_config(clean_dir, **common), student, teacher, examples, max_length=MAX_LENGTH
    )
    assert clean.resumed_from is None

    a = load_file(str(killed_dir / "model" / "model.safetensors"))
    b = load_file(str(clean_dir / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)
    initial = load_file(str(student / "model.safetensors"))
    assert any(not torch.allclose(initial[k], b[k]) for k in b)
    # the loss curve after the resume point is the uninterrupted run's
    clean_by_step = {row["step"]: row for row in clean.history}
    for row in resumed.history:
        assert abs(row["loss"] - clean_by_step[row["step"]]["loss"]) < 1e-4
