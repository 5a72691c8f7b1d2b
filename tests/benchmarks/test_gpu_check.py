"""`benchmarks/gpu_check.py` runs end to end at tiny sizes on the CPU, so the script waiting for a GPU session
does not rot. (The CUDA numbers themselves need the GPU machine; this checks every section's code path.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_small_on_cpu(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--small", "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    sections = report["sections"]
    assert set(sections) == {"correctness", "loss_speed", "train_step", "generation"}
    assert all(s["status"] == "ok" for s in sections.values()), {k: s["status"] for k, s in sections.items()}
    assert "FAIL" not in proc.stdout
    # The real library code ran (no fallback copies), and it imported nothing a bare GPU device lacks.
    assert all(
        row["path"].startswith("otdistill DistillationObjective") for row in sections["train_step"]["rows"]
    )
    assert report["meta"]["imported_absent_on_device"] == []
