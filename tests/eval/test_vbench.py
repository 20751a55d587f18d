"""The native VBench temporal-flickering score and the VBench subprocess runner's plumbing.

The real VBench runs only in the ``slow_vbench`` test at the bottom, which builds a 6.7 GB venv (about 3 minutes from
the local wheel cache the first time) and is therefore defined only when ``DIT_SPARSE_RUN_VBENCH=1``::

    DIT_SPARSE_RUN_VBENCH=1 python -m pytest -q -m slow_vbench tests/eval/test_vbench.py

(``DIT_SPARSE_VBENCH_VENV`` chooses the venv directory.)
"""

import json
import os
import sys

import numpy as np
import pytest

from dit_sparse.eval import vbench as V
from dit_sparse.eval.metrics import read_video, write_video


def _static(frames=6):
    rng = np.random.default_rng(0)
    return np.repeat(rng.integers(0, 256, size=(1, 32, 40, 3), dtype=np.uint8), frames, axis=0)


def _noisy(sigma, frames=6):
    rng = np.random.default_rng(1)
    base = _static(frames).astype(np.float64)
    return np.clip(base + rng.normal(0, sigma, size=base.shape), 0, 255).round().astype(np.uint8)


def test_temporal_flickering_static_is_one():
    assert V.temporal_flickering(_static()) == 1.0


def test_temporal_flickering_noisy_is_lower_and_follows_the_formula():
    mild, strong = _noisy(4.0), _noisy(20.0)
    s_mild, s_strong = V.temporal_flickering(mild), V.temporal_flickering(strong)
    assert 0.0 < s_strong < s_mild < 1.0
    # Independent float64 restatement of VBench's formula: 1 - mean |frame_t+1 - frame_t| / 255.
    diffs = np.abs(np.diff(strong.astype(np.float64), axis=0)).mean(axis=(1, 2, 3))
    assert s_strong == pytest.approx(1.0 - diffs.mean() / 255.0, abs=1e-6)
    # A single changed pixel value lowers the score by exactly 1 / (255 * pixels * pairs).
    v = _static(3)
    v[1, 0, 0, 0] = v[0, 0, 0, 0] ^ 1
    assert V.temporal_flickering(v) == pytest.approx(1.0 - 2 / (255 * 32 * 40 * 3 * 2), abs=1e-9)


def test_temporal_flickering_from_file_and_errors(tmp_path):
    path = tmp_path / "clip.mp4"
    write_video(path, _noisy(10.0))
    assert V.temporal_flickering(path) == V.temporal_flickering(read_video(path))
    assert V.temporal_flickering(path) < 1.0
    with pytest.raises(ValueError, match="at least 2 frames"):
        V.temporal_flickering(_static(1))
    with pytest.raises(ValueError, match="uint8"):
        V.temporal_flickering(_static().astype(np.float32))


def test_missing_vbench_weights(tmp_path):
    assert V.missing_vbench_weights(["temporal_flickering"], tmp_path) == {}
    missing = V.missing_vbench_weights(["dynamic_degree", "subject_consistency"], tmp_path)
    assert missing["dynamic_degree"] == [str(tmp_path / "raft_model/models/raft-things.pth")]
    assert len(missing["subject_consistency"]) == 2
    (tmp_path / "raft_model/models").mkdir(parents=True)
    (tmp_path / "raft_model/models/raft-things.pth").write_bytes(b"")
    (tmp_path / "dino_model/facebookresearch_dino_main").mkdir(parents=True)
    assert V.missing_vbench_weights(["dynamic_degree", "subject_consistency"], tmp_path) == {
        "subject_consistency": [str(tmp_path / "dino_model/dino_vitbase16_pretrain.pth")]
    }
    # Outside local mode VBench fetches CLIP/DINO itself; the aesthetic head still comes from the cache.
    assert V.missing_vbench_weights(["background_consistency"], tmp_path, local=False) == {}
    assert V.missing_vbench_weights(["aesthetic_quality"], tmp_path, local=False) == {
        "aesthetic_quality": [str(tmp_path / "aesthetic_model/emb_reader/sa_0_4_vit_l_14_linear.pth")]
    }
    assert set(V.DEFAULT_DIMENSIONS) <= set(V.VBENCH_WEIGHTS)
    with pytest.raises(ValueError, match="unsupported"):
        V.missing_vbench_weights(["color"], tmp_path)


def test_run_vbench_errors_without_vbench(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    with pytest.raises(ValueError, match="no .mp4"):
        V.run_vbench(videos, ["temporal_flickering"], python=sys.executable)
    write_video(videos / "a cat-0.mp4", _noisy(5.0))
    with pytest.raises(RuntimeError, match="ensure_vbench_env"):
        V.run_vbench(videos, ["temporal_flickering"], python=tmp_path / "nope" / "python")
    # Missing weights are reported before any subprocess starts.
    with pytest.raises(RuntimeError, match="raft-things.pth"):
        V.run_vbench(videos, ["dynamic_degree"], python=sys.executable, cache_dir=tmp_path / "cache")
    # This interpreter has no vbench: the child fails, and with strict=False the failure is gathered, not raised.
    out = tmp_path / "res" / "vbench.json"
    res = V.run_vbench(
        videos,
        ["temporal_flickering", "dynamic_degree"],
        out_json=out,
        python=sys.executable,
        cache_dir=tmp_path / "cache",
        strict=False,
        work_dir=tmp_path / "work",
    )
    assert res["dimensions"] == {} and res["num_videos"] == 1
    assert "vbench" in res["errors"]["temporal_flickering"] and "exit 1" in res["errors"]["temporal_flickering"]
    assert "missing weights" in res["errors"]["dynamic_degree"]
    assert json.loads(out.read_text()) == res
    assert (tmp_path / "work" / "temporal_flickering" / "vbench.log").is_file()


if os.environ.get("DIT_SPARSE_RUN_VBENCH") == "1":

    @pytest.mark.slow_vbench
    def test_real_vbench_temporal_flickering_matches_native(tmp_path):
        python = V.ensure_vbench_env()
        videos = tmp_path / "videos"
        videos.mkdir()
        write_video(videos / "static.mp4", _static(8))
        write_video(videos / "a flickering cat-0.mp4", _noisy(15.0, frames=8))
        res = V.run_vbench(videos, ["temporal_flickering"], python=python, cache_dir=tmp_path / "cache")
        per_video = res["dimensions"]["temporal_flickering"]["per_video"]
        assert set(per_video) == {"static.mp4", "a flickering cat-0.mp4"}
        for name, score in per_video.items():
            # Bit-identical: same decoded frames (OpenCV's and imageio's ffmpeg agree), same float32 arithmetic.
            assert score == V.temporal_flickering(videos / name)
        assert per_video["static.mp4"] == 1.0 and per_video["a flickering cat-0.mp4"] < 0.999
        assert res["dimensions"]["temporal_flickering"]["score"] == pytest.approx(np.mean(list(per_video.values())))
