"""PSNR / SSIM / LPIPS and mp4 I/O of dit_sparse.eval.metrics, checked against scikit-image and hand-written refs."""

import importlib
import math
import os
import sys
import types
import urllib.error

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from dit_sparse.eval import metrics as M


@pytest.fixture(scope="module")
def pair():
    """A random uint8 video (5 frames, 48x64) and a noisy copy of it."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, size=(5, 48, 64, 3), dtype=np.uint8)
    noise = rng.normal(0.0, 12.0, size=a.shape)
    b = np.clip(a + noise, 0, 255).round().astype(np.uint8)
    return a, b


def _skimage_ssim(a, b, **kw):
    af, bf = a / 255.0, b / 255.0
    return np.array([structural_similarity(af[t], bf[t], data_range=1, channel_axis=-1, **kw) for t in range(len(af))])


def _svg_ssim_reference(a, b):
    """Sparse-VideoGen's avg_pool2d(11, stride 1, padding 5) SSIM, written with scipy (zero border, /121)."""
    out = []
    for x, y in zip(a / 255.0, b / 255.0):

        def box(m):
            return np.stack([ndi.uniform_filter(m[..., c], size=11, mode="constant", cval=0.0) for c in range(3)], -1)

        mx, my = box(x), box(y)
        vx, vy, cxy = box(x * x) - mx**2, box(y * y) - my**2, box(x * y) - mx * my
        c1, c2 = 0.01**2, 0.03**2
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        out.append(s.mean())
    return np.array(out)


# ---------------------------------------------------------------------------------------------------------------------
# PSNR / SSIM against references
# ---------------------------------------------------------------------------------------------------------------------


def test_psnr_matches_skimage_per_frame(pair):
    a, b = pair
    ref = np.array([peak_signal_noise_ratio(a[t] / 255.0, b[t] / 255.0, data_range=1) for t in range(len(a))])
    got = M.psnr(a, b, per_frame=True)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-10)
    assert M.psnr(a, b) == pytest.approx(ref.mean(), abs=1e-10)
    assert 20 < M.psnr(a, b) < 30  # sigma 12 noise: ~26.6 dB


def test_ssim_gaussian_is_default_and_matches_skimage(pair):
    a, b = pair
    ref = _skimage_ssim(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    got = M.ssim(a, b, per_frame=True)
    assert np.abs(got - ref).max() < 1e-12
    assert M.ssim(a, b) == pytest.approx(ref.mean(), abs=1e-12)
    assert M.ssim(a, b) == M.ssim(a, b, "gaussian", border="valid")
    assert 0.2 < M.ssim(a, b) < 0.99


def test_ssim_uniform_valid_matches_skimage_population_covariance(pair):
    a, b = pair
    ref = _skimage_ssim(a, b, win_size=11, gaussian_weights=False, use_sample_covariance=False)
    got = M.ssim(a, b, "uniform", border="valid", per_frame=True)
    assert np.abs(got - ref).max() < 1e-12
    # skimage's default sample covariance (x 121/120) is a different number: the docstring's claim that it matches
    # neither variant must stay true.
    sample = _skimage_ssim(a, b, win_size=11, gaussian_weights=False, use_sample_covariance=True)
    assert np.abs(got - sample).max() > 1e-7  # (5e-7 here: far above the 1e-12 match)


def test_ssim_uniform_default_is_sparse_videogen_zero_padded(pair):
    a, b = pair
    ref = _svg_ssim_reference(a, b)
    got = M.ssim(a, b, "uniform", per_frame=True)
    assert np.abs(got - ref).max() < 1e-12
    # Border pixels count here, so it differs from the valid-window value.
    assert abs(M.ssim(a, b, "uniform") - M.ssim(a, b, "uniform", border="valid")) > 1e-4


def test_ssim_float32_close_to_float64(pair):
    a, b = pair
    assert M.ssim(a, b, dtype=torch.float32) == pytest.approx(M.ssim(a, b), abs=1e-5)


# ---------------------------------------------------------------------------------------------------------------------
# Identical frames, the PSNR cap, errors
# ---------------------------------------------------------------------------------------------------------------------


def test_identical_videos(pair):
    a, _ = pair
    assert M.psnr(a, a.copy()) == math.inf
    assert np.isinf(M.psnr(a, a, per_frame=True)).all()
    assert M.ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    assert M.ssim(a, a, "uniform") == pytest.approx(1.0, abs=1e-12)
    assert M.ssim(a, a, "uniform", border="valid") == pytest.approx(1.0, abs=1e-12)


def test_psnr_caps_identical_frames_at_max_db(pair):
    a, b = pair
    b = b.copy()
    b[1] = a[1]  # one exact frame among noisy ones
    frames = M.psnr(a, b, per_frame=True)
    assert np.isinf(frames[1]) and np.isfinite(np.delete(frames, 1)).all()
    expected = (100.0 + np.delete(frames, 1).sum()) / len(frames)
    assert M.psnr(a, b) == pytest.approx(expected, abs=1e-10)
    assert M.psnr(a, b, max_db=60.0) == pytest.approx((60.0 + np.delete(frames, 1).sum()) / len(frames), abs=1e-10)
    # The cap clamps every frame, so a near-exact frame never scores above an exact one.
    assert M.psnr(a, b, max_db=20.0) == pytest.approx(20.0, abs=1e-10)


def test_shape_mismatch_names_both_shapes(pair):
    a, b = pair
    with pytest.raises(ValueError, match=r"\(5, 48, 64, 3\).*\(4, 48, 64, 3\)"):
        M.psnr(a, b[:4])
    with pytest.raises(ValueError, match=r"\(5, 48, 64, 3\).*\(5, 48, 60, 3\)"):
        M.ssim(a, b[:, :, :60])
    with pytest.raises(ValueError, match=r"\(5, 48, 64, 3\).*\(5, 40, 64, 3\)"):
        M.lpips(a, b[:, :40], lpips_model=torch.nn.Identity())


def test_bad_inputs_raise(pair):
    a, _ = pair
    f = torch.from_numpy(a).float() / 255.0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        M.psnr(f * 2 - 1, f)  # a [-1, 1] video
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        M.ssim(f * 255, f)  # a [0, 255] float video
    with pytest.raises(ValueError, match="ambiguous"):
        M.psnr(np.zeros((2, 3, 16, 3), np.uint8), np.zeros((2, 3, 16, 3), np.uint8))
    assert M.psnr(np.zeros((2, 3, 16, 3), np.uint8), np.ones((2, 3, 16, 3), np.uint8), layout="THWC") > 0
    with pytest.raises(ValueError, match="4-D"):
        M.psnr(a[0], a[0])
    with pytest.raises(TypeError, match="dtype"):
        M.psnr(a.astype(np.int32), a.astype(np.int32))
    with pytest.raises(ValueError, match="smaller than"):
        M.ssim(a[:, :8, :8], a[:, :8, :8])
    with pytest.raises(ValueError, match="window"):
        M.ssim(a, a, "box")


def test_uint8_float_tensor_inputs_are_equivalent(pair):
    a, b = pair
    ref_psnr, ref_ssim = M.psnr(a, b), M.ssim(a, b)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    variants = [
        (ta, tb),  # torch uint8 THWC
        (ta.float() / 255, tb.float() / 255),  # torch float THWC
        (ta.permute(0, 3, 1, 2).float() / 255, tb.permute(0, 3, 1, 2).float() / 255),  # torch float TCHW
        (a.astype(np.float32) / 255, b.astype(np.float32) / 255),  # numpy float THWC
        (a, tb.permute(0, 3, 1, 2).double() / 255),  # mixed dtypes and layouts
    ]
    for x, y in variants:
        assert M.psnr(x, y) == pytest.approx(ref_psnr, abs=1e-5)
        assert M.ssim(x, y) == pytest.approx(ref_ssim, abs=1e-6)
        assert M.ssim(x, y, "uniform") == pytest.approx(M.ssim(a, b, "uniform"), abs=1e-6)


# ---------------------------------------------------------------------------------------------------------------------
# LPIPS
# ---------------------------------------------------------------------------------------------------------------------


class _RecordingDistance(torch.nn.Module):
    """Stands in for lpips.LPIPS: mean absolute difference per frame, recording the input range."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(()))
        self.ranges = []

    def forward(self, x, y):
        self.ranges.append((float(x.min()), float(x.max())))
        return (x - y).abs().mean(dim=(1, 2, 3), keepdim=True)


def test_lpips_with_preloaded_model_scales_to_minus_one_one(pair):
    a, b = pair
    model = _RecordingDistance()
    got = M.lpips(a, b, lpips_model=model, batch_size=2, per_frame=True)
    expected = np.abs(a / 127.5 - b / 127.5).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert len(model.ranges) == 3  # 5 frames in batches of 2
    lo = min(r[0] for r in model.ranges)
    hi = max(r[1] for r in model.ranges)
    assert lo == pytest.approx(-1.0) and hi == pytest.approx(1.0)  # [-1, 1], not [0, 1]
    assert M.lpips(a, a, lpips_model=model) == 0.0


def _ckpt(net):
    return os.path.join(torch.hub.get_dir(), "checkpoints", M.LPIPS_TRUNK_CHECKPOINTS[net][1])


def test_lpips_real_package_or_helpful_error(pair):
    """Whatever this machine has: either real LPIPS numbers, or a RuntimeError that says how to get them."""
    a, b = pair
    M._LPIPS_CACHE.clear()
    try:
        importlib.import_module("lpips")
        importable = True
    except Exception:  # torchvision that does not match torch raises RuntimeError at import
        importable = False
    if not importable:
        with pytest.raises(RuntimeError, match=r"pip install lpips.*lpips_model="):
            M.lpips(a, b)
    elif not os.path.isfile(_ckpt("alex")):
        with pytest.raises(RuntimeError) as info:
            M.lpips(a, b)
        msg = str(info.value)
        assert "alexnet-owt-7be5be79.pth" in msg and os.path.join("hub", "checkpoints") in msg
        assert "lpips_model=" in msg and "TORCH_HOME" in msg
    else:
        assert M.lpips(a, a) == pytest.approx(0.0, abs=1e-6)
        assert M.lpips(a, b) > 0.01


@pytest.fixture
def fake_lpips_package(monkeypatch, tmp_path):
    """An importable stand-in for the lpips package and an empty TORCH_HOME, so the weight checks run anywhere."""
    calls = []
    fake = types.ModuleType("lpips")

    class LPIPS(_RecordingDistance):
        def __init__(self, net="alex", verbose=True, **kw):
            super().__init__()
            calls.append(net)
            if fake.fail_with is not None:
                raise fake.fail_with

    fake.LPIPS = LPIPS
    fake.fail_with = None
    monkeypatch.setitem(sys.modules, "lpips", fake)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(M, "_LPIPS_CACHE", {})
    return fake, calls, tmp_path / "hub" / "checkpoints"


def test_lpips_missing_weights_fail_fast_with_instructions(pair, fake_lpips_package):
    a, b = pair
    fake, calls, ckpt_dir = fake_lpips_package
    for net, filename in (("alex", "alexnet-owt-7be5be79.pth"), ("vgg", "vgg16-397923af.pth")):
        with pytest.raises(RuntimeError) as info:
            M.lpips(a, b, net)
        msg = str(info.value)
        assert filename in msg and str(ckpt_dir) in msg and "lpips_model=" in msg
    assert calls == []  # never tried to build (and download) anything
    # A download that fails is wrapped the same way.
    fake.fail_with = urllib.error.URLError("no network")
    with pytest.raises(RuntimeError, match=r"URLError.*alexnet-owt-7be5be79\.pth"):
        M.lpips(a, b, allow_download=True)
    assert calls == ["alex"]


def test_lpips_builds_and_caches_model_when_checkpoint_present(pair, fake_lpips_package):
    a, b = pair
    fake, calls, ckpt_dir = fake_lpips_package
    ckpt_dir.mkdir(parents=True)
    (ckpt_dir / "vgg16-397923af.pth").write_bytes(b"")
    first = M.lpips(a, b, "vgg")
    assert first == pytest.approx(np.abs(a / 127.5 - b / 127.5).mean(), rel=1e-5)
    assert M.lpips(a, a, "vgg") == 0.0
    assert calls == ["vgg"]  # built once, then cached
    with pytest.raises(ValueError, match="net must be"):
        M.lpips(a, b, "resnet")


# ---------------------------------------------------------------------------------------------------------------------
# mp4 I/O and compare_videos
# ---------------------------------------------------------------------------------------------------------------------


def _smooth_video(seed, frames=8, h=64, w=64):
    """Low-frequency content, which H.264 keeps well (pure noise would be destroyed by the codec)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    out = []
    for t in range(frames):
        ph = rng.uniform(0, 2 * np.pi, size=3)
        img = np.stack([0.5 + 0.4 * np.sin(2 * np.pi * (xx + yy * (c + 1)) + ph[c] + 0.3 * t) for c in range(3)], -1)
        out.append(img)
    return (np.stack(out) * 255).round().astype(np.uint8)


def test_write_read_roundtrip_keeps_size(tmp_path):
    video = _smooth_video(1)
    path = tmp_path / "v.mp4"
    M.write_video(path, video, fps=16, quality=9)
    back = M.read_video(path)
    assert back.shape == video.shape and back.dtype == np.uint8
    assert M.psnr(video, back) > 30  # lossy, but close
    # Odd sizes keep their resolution too (yuv444p instead of rescaling), and float TCHW input is accepted.
    odd = torch.from_numpy(_smooth_video(2, frames=3, h=33, w=47)).permute(0, 3, 1, 2).float() / 255
    M.write_video(tmp_path / "odd.mp4", odd)
    assert M.read_video(tmp_path / "odd.mp4").shape == (3, 33, 47, 3)


def test_compare_videos_matches_metrics_on_decoded_frames(tmp_path):
    a = _smooth_video(3)
    b = np.clip(a.astype(int) + np.random.default_rng(4).integers(-25, 26, a.shape), 0, 255).astype(np.uint8)
    pa, pb = tmp_path / "dense.mp4", tmp_path / "sparse.mp4"
    M.write_video(pa, a)
    M.write_video(pb, b)
    da, db = M.read_video(pa), M.read_video(pb)
    model = _RecordingDistance()
    res = M.compare_videos(pa, pb, metrics=("psnr", "ssim", "lpips"), lpips_model=model)
    assert res["num_frames"] == 8 and res["height"] == 64 and res["width"] == 64
    assert res["psnr"] == pytest.approx(M.psnr(da, db), abs=1e-12)
    assert res["ssim"] == pytest.approx(M.ssim(da, db), abs=1e-12)
    assert res["lpips"] == pytest.approx(M.lpips(da, db, lpips_model=model), abs=1e-12)
    assert res["psnr"] < 40 and res["ssim"] < 0.999  # the two files really differ
    same = M.compare_videos(pa, pa, ssim_window="uniform")
    assert same["psnr"] == math.inf and same["ssim"] == pytest.approx(1.0, abs=1e-12)
    assert set(same) == {"psnr", "ssim", "num_frames", "height", "width"}


def test_compare_videos_mismatch_raises(tmp_path):
    M.write_video(tmp_path / "a.mp4", _smooth_video(5, frames=8))
    M.write_video(tmp_path / "b.mp4", _smooth_video(5, frames=6))
    M.write_video(tmp_path / "c.mp4", _smooth_video(5, frames=8, h=48))
    with pytest.raises(ValueError, match=r"8 frames of 64x64.*6 frames of 64x64"):
        M.compare_videos(tmp_path / "a.mp4", tmp_path / "b.mp4")
    with pytest.raises(ValueError, match=r"a\.mp4.*c\.mp4"):
        M.compare_videos(tmp_path / "a.mp4", tmp_path / "c.mp4")
    with pytest.raises(ValueError, match="unknown metrics"):
        M.compare_videos(tmp_path / "a.mp4", tmp_path / "a.mp4", metrics=("fvd",))
