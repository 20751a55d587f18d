import json
import subprocess
import sys

from dit_sparse.eval import report


def test_bench_e2e_tiny_writes_valid_json(tmp_path):
    out = tmp_path / "e2e.json"
    proc = subprocess.run(
        [sys.executable, "-m", "dit_sparse.eval.bench", "e2e", "--model", "tiny", "--methods", "radial",
         "--steps", "2", "--dense-steps", "1", "--with-cache", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["benchmark"] == "e2e" and data["model"] == "tiny"
    assert data["runs"]["dense"]["seconds"] > 0
    radial = data["runs"]["radial"]
    assert "error" not in radial, radial
    assert 0 < radial["mean_density"] <= 1 and radial["sparse_calls"] > 0
    assert "error" not in data["runs"]["cache+sparse"], data["runs"]["cache+sparse"]
    assert data["env"]["device"] == "cpu" and "commit" in data


def test_bench_kernel_tiny_checks_against_reference(tmp_path):
    out = tmp_path / "k.json"
    proc = subprocess.run(
        [sys.executable, "-m", "dit_sparse.eval.bench", "kernel", "--shapes", "tiny", "--backends", "reference",
         "--densities", "1.0,0.25", "--reps", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    rows = data["results"]["tiny"]["sparse"]["reference"]
    assert rows["0.25"]["ok"] and abs(rows["0.25"]["density"] - 0.25) < 0.1


SAMPLE_KERNEL = {
    "benchmark": "kernel", "commit": "abc", "block_size": 128, "command": "python -m dit_sparse.eval.bench kernel",
    "env": {"device": "NVIDIA H100"},
    "results": {"wan1.3b-480p": {
        "tokens": 32760, "heads": 12, "head_dim": 128,
        "dense": {"cudnn_sdpa": {"median_ms": 10.8, "tflops": 610.0}},
        "sparse": {"triton": {"0.25": {"median_ms": 3.0, "density": 0.25, "effective_tflops": 550.0,
                                       "max_abs_err_vs_reference": 0.004}},
                   "fa4": {"unavailable": "not installed"}},
    }},
}
SAMPLE_E2E = {
    "benchmark": "e2e", "model": "wan1.3b-480p", "steps": 10, "dense_steps": 2, "dense_layers": 1, "cfg": True,
    "attention_share": 0.56, "commit": "abc", "env": {"device": "NVIDIA H100"},
    "runs": {"dense": {"seconds": 12.0}, "radial": {"seconds": 8.0, "speedup": 1.5, "amdahl_bound": 2.0,
                                                    "amdahl_at_density": 1.6, "mean_density": 0.3,
                                                    "backend": "triton", "psnr_latents_vs_dense": 30.0}},
}


def test_report_renders_tables_plots_and_readme(tmp_path):
    res = tmp_path / "results"
    res.mkdir()
    (res / "2026-01-01_h100_kernel.json").write_text(json.dumps(SAMPLE_KERNEL))
    (res / "2026-01-01_h100_e2e.json").write_text(json.dumps(SAMPLE_E2E))
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- BEGIN:kernel -->\nold\n<!-- END:kernel -->\ntail\n")
    docs = tmp_path / "docs"
    report.update_readme(str(readme), str(res), str(docs))
    text = readme.read_text()
    assert "old" not in text and "tail" in text
    assert "| wan1.3b-480p | triton | 0.25 | 3.00 | 550 | 0.28 | 4.0e-03 |" in text
    assert "| radial | 8.00 | 1.50 | 2.00 | 1.60 | 0.30 | triton | 30.0 |" in text
    assert (docs / "kernel_speed.png").stat().st_size > 1000
    assert (docs / "e2e_speedup.png").stat().st_size > 1000


def test_plot_layout(tmp_path):
    from dit_sparse import BlockLayout

    layout = BlockLayout.dense(1, 2, 300, 300, 64, 64)
    fig = report.plot_layout(layout, head=1, path=str(tmp_path / "l.png"))
    assert fig is not None and (tmp_path / "l.png").exists()


def test_bench_layer_tiny(tmp_path):
    out = tmp_path / "layer.json"
    proc = subprocess.run(
        [sys.executable, "-m", "dit_sparse.eval.bench", "layer", "--shape", "tiny", "--methods", "radial",
         "--reps", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["results"]["dense_sdpa"]["ms"] > 0
    assert 0 < data["results"]["radial"]["density"] < 1
