"""`dit-sparse generate --ulysses 2` relaunches itself through torchrun (two gloo processes on the CPU)."""

import json
import subprocess
import sys


def test_generate_ulysses_two_processes_writes_one_report(tmp_path):
    report = tmp_path / "r.json"
    cmd = [sys.executable, "-m", "dit_sparse.pipelines.generate", "--model", "tiny", "--prompt", "a red square",
           "--method", "radial", "--steps", "2", "--frames", "5", "--height", "64", "--width", "64",
           "--no-warmup", "--ulysses", "2", "--out", str(tmp_path / "v.mp4"), "--report", str(report)]
    env_shim = "import torch; torch.accelerator.device_count = lambda: 1\n"  # CPU mesh: see tests/test_parallel.py
    sitecustomize = tmp_path / "sitecustomize.py"
    sitecustomize.write_text(env_shim)
    import os

    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(report.read_text())
    assert data["method"] == "radial" and (tmp_path / "v.mp4").stat().st_size > 0
