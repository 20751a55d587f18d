"""End-to-end tests of ``dit-sparse generate`` on the offline ``tiny`` model, and its argument errors."""

import json
import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REQUIRED_KEYS = {
    "psnr", "ssim", "sparse_seconds", "dense_seconds", "speedup", "density",
    "model", "method", "config", "prompt", "height", "width", "frames", "steps", "guidance", "seed", "device",
    "dtype", "summary",
}


def _read(path):
    import imageio.v2 as iio

    reader = iio.get_reader(str(path), format="FFMPEG")
    try:
        return np.stack([np.asarray(f) for f in reader])
    finally:
        reader.close()


def test_generate_tiny_compare_dense_writes_videos_and_report(tmp_path, capsys):
    from dit_sparse.cli import main

    out, report_path = tmp_path / "fox.mp4", tmp_path / "report.json"
    rc = main([
        "generate", "--model", "tiny", "--prompt", "a red fox running in snow", "--method", "radial",
        "--steps", "2", "--frames", "17", "--height", "64", "--width", "64", "--dense-steps", "0",
        "--compare-dense", "--out", str(out), "--report", str(report_path), "--seed", "3",
    ])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "speedup" in printed and "PSNR" in printed

    for path in (out, tmp_path / "fox_dense.mp4"):
        video = _read(path)
        assert video.shape == (17, 64, 64, 3), (path, video.shape)
        assert video.std() > 0  # a real picture, not a constant frame

    report = json.loads(report_path.read_text())
    assert REQUIRED_KEYS <= set(report), REQUIRED_KEYS - set(report)
    assert report["method"] == "radial" and report["frames"] == 17 and report["steps"] == 2 and report["seed"] == 3
    assert report["config"]["method"] == "radial" and report["config"]["dense_steps"] == 0
    assert report["sparse_seconds"] > 0 and report["dense_seconds"] > 0
    assert report["speedup"] == pytest.approx(report["dense_seconds"] / report["sparse_seconds"])
    # Sparse attention really ran: calls were sparse and skipped key blocks.
    assert report["summary"]["sparse_calls"] > 0
    assert 0 < report["density"] < 1
    assert report["psnr"] is not None and (report["psnr"] == "inf" or report["psnr"] > 10)
    assert 0 < report["ssim"] <= 1
    assert report["dense_video"].endswith("fox_dense.mp4")


def test_generate_without_compare_has_null_metrics(tmp_path):
    from dit_sparse.pipelines.generate import main

    report_path = tmp_path / "r.json"
    rc = main([
        "--model", "tiny", "--method", "dense", "--steps", "1", "--frames", "5", "--height", "32", "--width", "32",
        "--out", str(tmp_path / "d.mp4"), "--report", str(report_path),
    ])
    assert rc == 0
    report = json.loads(report_path.read_text())
    assert report["psnr"] is None and report["dense_seconds"] is None and report["speedup"] is None
    assert report["density"] == 1.0
    assert _read(tmp_path / "d.mp4").shape == (5, 32, 32, 3)


@pytest.mark.parametrize("frames, named", [(16, ("13", "17")), (80, ("77", "81")), (0, ("1", "5"))])
def test_bad_frame_count_names_valid_counts(frames, named, capsys):
    from dit_sparse.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["generate", "--model", "tiny", "--frames", str(frames), "--steps", "1"])
    assert exc.value.code != 0
    err = capsys.readouterr().err
    assert "4k+1" in err and all(n in err for n in named), err


def test_bad_resolution_names_valid_sizes(capsys):
    from dit_sparse.pipelines.generate import main

    with pytest.raises(SystemExit) as exc:
        main(["--model", "tiny", "--height", "70"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "multiple of 16" in err and "64 or 80" in err


def test_unknown_model_name(capsys):
    from dit_sparse.pipelines.generate import main

    with pytest.raises(SystemExit) as exc:
        main(["--model", "definitely-not-a-model"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unknown model 'definitely-not-a-model'" in err and "Wan-AI/Wan2.1-T2V-1.3B-Diffusers" in err


def test_unknown_hub_model_says_what_was_tried(monkeypatch, capsys):
    import huggingface_hub.constants

    # No network here: offline mode makes the Hub lookup fail at once instead of retrying.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    from dit_sparse.pipelines.generate import main

    with pytest.raises(SystemExit) as exc:
        main(["--model", "nobody/no-such-video-model", "--steps", "1", "--device", "cpu"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "could not load model 'nobody/no-such-video-model'" in err
    assert "WanPipeline.from_pretrained" in err and "Hugging Face Hub" in err


def test_option_of_another_method_is_rejected(capsys):
    from dit_sparse.pipelines.generate import main

    with pytest.raises(SystemExit):
        main(["--model", "tiny", "--method", "radial", "--top-p", "0.5"])
    assert "--top-p (semantic only)" in capsys.readouterr().err


def test_invalid_sparse_value_is_rejected_before_loading(capsys):
    from dit_sparse.pipelines.generate import main

    with pytest.raises(SystemExit):
        main(["--model", "tiny", "--method", "draft", "--density", "1.5"])
    assert "density" in capsys.readouterr().err


def test_dense_steps_int_or_fraction():
    from dit_sparse.pipelines.generate import build_parser, sparse_options
    from dit_sparse.pipelines.presets import PRESETS

    parser = build_parser()
    args = parser.parse_args(["--method", "radial", "--dense-steps", "12"])
    opts = sparse_options(args, PRESETS["wan2.1-1.3b"])
    assert opts["dense_steps"] == 12 and isinstance(opts["dense_steps"], int)
    assert opts["decay"] == 0.2 and opts["dense_layers"] == 1
    args = parser.parse_args(["--method", "radial", "--dense-steps", "0.5", "--decay", "0.4"])
    opts = sparse_options(args, PRESETS["hunyuanvideo"])
    assert opts == {"dense_steps": 0.5, "dense_layers": 0, "decay": 0.4, "fast_dense": True}
    with pytest.raises(SystemExit):
        parser.parse_args(["--dense-steps", "many"])


def test_offload_needs_cuda(capsys):
    from dit_sparse.pipelines.generate import main

    with pytest.raises(SystemExit):
        main(["--model", "tiny", "--device", "cpu", "--offload", "--steps", "1"])
    assert "--offload" in capsys.readouterr().err


def test_out_of_memory_gives_hints(monkeypatch, capsys, tmp_path):
    import torch

    from dit_sparse.pipelines import generate as g

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(g, "load_pipeline", lambda *args, **kwargs: object())
    monkeypatch.setattr(g, "run_pipeline", out_of_memory)
    with pytest.raises(SystemExit) as exc:
        g.main(["--model", "tiny", "--steps", "1", "--out", str(tmp_path / "x.mp4")])
    assert exc.value.code == 3
    err = capsys.readouterr().err
    assert "out of GPU memory" in err and "--offload" in err and "--height/--width" in err and "--frames" in err


def test_module_entry_point_reports_bad_frames():
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-m", "dit_sparse.pipelines.generate", "--model", "tiny", "--frames", "20"],
        capture_output=True, text=True, env=env, cwd=repo, timeout=120,
    )
    assert proc.returncode == 2
    assert "17 or 21" in proc.stderr


def test_generate_small_without_weights_is_a_clear_error(tmp_path, monkeypatch, capsys):
    from dit_sparse.cli import main

    monkeypatch.setenv("DIT_SPARSE_SMALL_MODEL", str(tmp_path))  # no pipeline there
    with pytest.raises(SystemExit) as exc:
        main(["generate", "--model", "small", "--steps", "1", "--out", str(tmp_path / "x.mp4")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "'small' model's weights are not installed" in err and "--preset small" in err
