"""Frame-level fidelity metrics between two videos: PSNR, SSIM (two windows) and LPIPS, plus mp4 I/O.

These follow the protocol of the sparse-attention papers (Sparse-VideoGen, SpargeAttention, ...): a sparse run is
compared against the dense run with the same seed, frame by frame, and the per-frame values are averaged over frames.

Accepted video inputs (``a`` and ``b`` of every metric), always 4-D with 3 (RGB) channels:

- ``np.ndarray`` or ``torch.Tensor`` of dtype uint8, values 0..255 (divided by 255);
- ``np.ndarray`` or ``torch.Tensor`` of a floating dtype, values in [0, 1] (what Diffusers returns with
  ``output_type="np"`` or ``"pt"``). Values outside [-1e-4, 1 + 1e-4] raise ``ValueError``: a [-1, 1] or [0, 255]
  float video is a caller bug that would otherwise silently give wrong numbers.

The layout is ``(T, H, W, 3)`` ("THWC", what imageio and Diffusers' ``"np"`` output give) or ``(T, 3, H, W)``
("TCHW", Diffusers' ``"pt"`` output with the batch dimension removed). It is detected from where the size-3 axis is;
when both axis 1 and axis 3 have size 3 the layout is ambiguous and must be passed as ``layout=``. The two videos may
differ in dtype and layout; after conversion to ``(T, 3, H, W)`` their shapes must be equal, else ``ValueError``.

All arithmetic runs in torch on the device of the first tensor input (CPU for numpy inputs) unless ``device=`` is
given, in float64 by default so that the numbers match scikit-image to ~1e-12; frames are processed in chunks so a
long 720p video does not need several GB at once.

PSNR policy for identical frames: a frame with MSE 0 has PSNR +inf. The video PSNR is the mean over frames of
``min(PSNR_t, max_db)`` with ``max_db = 100`` dB, except that when *every* frame is identical the result is ``inf``
(so "bit-exact" stays distinguishable from "very close"). 100 dB is far above anything a lossy pipeline produces (an
8-bit video whose frames differ by one level everywhere is at 48.1 dB), so the cap only decides how exact frames
count, and clamping every frame (not only the identical ones) keeps the mean monotone in the per-frame errors.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import socket
from typing import Dict, Iterator, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

VideoLike = Union[np.ndarray, torch.Tensor]

# Tolerance of the [0, 1] range check for float videos: VAE decoders followed by ``(x + 1) / 2`` can overshoot by an
# ulp or so; anything larger is a wrong value range, not rounding.
_RANGE_TOL = 1e-4
# Frames per chunk of the SSIM/PSNR computation: 8 frames of 720p in float64 with the 15 filtered maps is ~1.3 GB.
_FRAMES_PER_CHUNK = 8

SSIM_K1 = 0.01
SSIM_K2 = 0.03
SSIM_WINDOW_SIZE = 11
SSIM_GAUSSIAN_SIGMA = 1.5


# ---------------------------------------------------------------------------------------------------------------------
# Input normalisation
# ---------------------------------------------------------------------------------------------------------------------


def _detect_layout(shape: Tuple[int, ...], layout: Optional[str]) -> str:
    if layout is not None:
        layout = layout.upper()
        if layout not in ("THWC", "TCHW"):
            raise ValueError(f"layout must be 'THWC' or 'TCHW', got {layout!r}")
        channel_axis = 3 if layout == "THWC" else 1
        if shape[channel_axis] != 3:
            raise ValueError(f"layout {layout} expects 3 channels on axis {channel_axis}, got shape {shape}")
        return layout
    last, first = shape[3] == 3, shape[1] == 3
    if last and not first:
        return "THWC"
    if first and not last:
        return "TCHW"
    if last and first:
        raise ValueError(f"ambiguous video layout for shape {shape}: pass layout='THWC' or layout='TCHW'")
    raise ValueError(f"expected an RGB video of shape (T, H, W, 3) or (T, 3, H, W), got shape {shape}")


class _Video:
    """A video as a (T, 3, H, W) view of the caller's data, converted to float chunk by chunk."""

    def __init__(self, video: VideoLike, layout: Optional[str], name: str):
        if isinstance(video, np.ndarray):
            tensor = torch.from_numpy(np.ascontiguousarray(video))
        elif isinstance(video, torch.Tensor):
            tensor = video.detach()
        else:
            raise TypeError(f"{name}: expected a numpy array or torch tensor, got {type(video).__name__}")
        self.orig_shape = tuple(tensor.shape)
        if tensor.dim() != 4:
            raise ValueError(f"{name}: expected a 4-D video (T, H, W, 3) or (T, 3, H, W), got shape {self.orig_shape}")
        self.layout = _detect_layout(self.orig_shape, layout)
        if tensor.dtype == torch.uint8:
            self.is_uint8 = True
        elif tensor.is_floating_point():
            self.is_uint8 = False
            if tensor.numel():
                lo, hi = torch.aminmax(tensor.float())
                lo, hi = float(lo), float(hi)
                if math.isnan(lo) or math.isnan(hi):
                    raise ValueError(f"{name}: video contains NaN")
                if lo < -_RANGE_TOL or hi > 1 + _RANGE_TOL:
                    raise ValueError(
                        f"{name}: float videos must hold values in [0, 1], got range [{lo:.4g}, {hi:.4g}] "
                        "(convert [-1, 1] with (x + 1) / 2, or pass uint8 for 0..255)"
                    )
        else:
            raise TypeError(f"{name}: expected dtype uint8 or a floating dtype, got {tensor.dtype}")
        self.tchw = tensor.permute(0, 3, 1, 2) if self.layout == "THWC" else tensor
        self.shape = tuple(self.tchw.shape)

    def chunk(self, start: int, stop: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        x = self.tchw[start:stop].to(device=device)
        if self.is_uint8:
            return x.to(dtype) / 255.0
        return x.to(dtype).clamp_(0.0, 1.0)


def _pair(
    a: VideoLike, b: VideoLike, layout: Optional[str], device: Optional[Union[str, torch.device]]
) -> Tuple[_Video, _Video, torch.device]:
    va, vb = _Video(a, layout, "a"), _Video(b, layout, "b")
    if va.shape != vb.shape:
        raise ValueError(
            f"video shapes differ: a has shape {va.orig_shape} ({va.layout}), b has shape {vb.orig_shape} "
            f"({vb.layout}); as (T, 3, H, W) that is {va.shape} vs {vb.shape}"
        )
    if va.shape[0] == 0:
        raise ValueError("videos have no frames")
    if device is None:
        tensors = [v for v in (a, b) if isinstance(v, torch.Tensor)]
        device = tensors[0].device if tensors else torch.device("cpu")
    return va, vb, torch.device(device)


def _chunks(
    va: _Video, vb: _Video, device: torch.device, dtype: torch.dtype, frames: int = _FRAMES_PER_CHUNK
) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    for start in range(0, va.shape[0], frames):
        stop = min(start + frames, va.shape[0])
        yield va.chunk(start, stop, device, dtype), vb.chunk(start, stop, device, dtype)


# ---------------------------------------------------------------------------------------------------------------------
# PSNR
# ---------------------------------------------------------------------------------------------------------------------


def psnr(
    a: VideoLike,
    b: VideoLike,
    *,
    max_db: float = 100.0,
    per_frame: bool = False,
    layout: Optional[str] = None,
    device: Optional[Union[str, torch.device]] = None,
) -> Union[float, np.ndarray]:
    """Peak signal-to-noise ratio between two videos, computed per frame and averaged over frames.

    Frames are converted to [0, 1] and ``PSNR_t = 10 * log10(1 / MSE_t)`` with ``MSE_t`` the mean squared error over
    the frame's H * W * 3 values (the protocol of Sparse-VideoGen and related papers). An identical frame has
    ``PSNR_t = inf``; see the module docstring for how the mean treats it.

    Args:
        a (`np.ndarray` or `torch.Tensor`): first video, uint8 or float in [0, 1], (T, H, W, 3) or (T, 3, H, W).
        b (`np.ndarray` or `torch.Tensor`): second video, same number of frames and resolution as ``a``.
        max_db (`float`, defaults to 100.0): each frame's PSNR is clamped to this value before averaging; the result
            is ``inf`` only when every frame is identical.
        per_frame (`bool`, defaults to `False`): return the unclamped per-frame values (``inf`` for identical frames)
            instead of their mean.
        layout (`str`, *optional*): ``"THWC"`` or ``"TCHW"``; detected from the shape when omitted.
        device (`str` or `torch.device`, *optional*): where to compute; defaults to the first tensor input's device.

    Returns:
        `float` (mean PSNR in dB) or `np.ndarray` of shape (T,) when ``per_frame`` is set.

    Raises:
        ValueError: the videos' shapes differ (the message names both), the layout is ambiguous, or a float video is
            outside [0, 1].
    """
    va, vb, dev = _pair(a, b, layout, device)
    values = []
    for x, y in _chunks(va, vb, dev, torch.float64):
        mse = (x - y).square_().mean(dim=(1, 2, 3))
        values.append(10.0 * torch.log10(1.0 / mse))  # 1 / 0 = inf -> inf dB, no warning in torch
    frames = torch.cat(values).cpu().numpy()
    if per_frame:
        return frames
    if np.isinf(frames).all():
        return math.inf
    return float(np.minimum(frames, max_db).mean())


# ---------------------------------------------------------------------------------------------------------------------
# SSIM
# ---------------------------------------------------------------------------------------------------------------------


def _window_1d(window: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if window == "gaussian":
        # scipy.ndimage.gaussian_filter with sigma=1.5, truncate=3.5 -> radius int(3.5 * 1.5 + 0.5) = 5, 11 taps,
        # exactly what skimage's structural_similarity(gaussian_weights=True) uses.
        x = torch.arange(SSIM_WINDOW_SIZE, dtype=torch.float64) - SSIM_WINDOW_SIZE // 2
        w = torch.exp(-0.5 * (x / SSIM_GAUSSIAN_SIGMA) ** 2)
        w = w / w.sum()
    elif window == "uniform":
        w = torch.full((SSIM_WINDOW_SIZE,), 1.0 / SSIM_WINDOW_SIZE, dtype=torch.float64)
    else:
        raise ValueError(f"window must be 'gaussian' or 'uniform', got {window!r}")
    return w.to(dtype=dtype, device=device)


def _filter_separable(maps: torch.Tensor, w: torch.Tensor, padding: int) -> torch.Tensor:
    """Correlate the last two axes of ``maps`` with ``w`` (outer) ``w``, keeping only fully covered positions.

    Written as 2 x 11 shifted multiply-adds rather than a depthwise ``conv2d``: on CPU, grouped float64 convolution
    is ~7x slower than this (12 s vs 1.7 s for 8 frames of 480x832 here), and on GPU both are memory-bound.
    """
    if padding:
        maps = F.pad(maps, (padding, padding, padding, padding))  # zeros, as avg_pool2d(padding=5)
    taps = w.tolist()
    n = len(taps)
    rows = maps.shape[-2] - n + 1
    out = maps[..., 0:rows, :] * taps[0]
    for i in range(1, n):
        out.add_(maps[..., i : i + rows, :], alpha=taps[i])
    cols = out.shape[-1] - n + 1
    res = out[..., 0:cols] * taps[0]
    for i in range(1, n):
        res.add_(out[..., i : i + cols], alpha=taps[i])
    return res


def _ssim_frames(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, padding: int) -> torch.Tensor:
    """Mean SSIM of each frame of (N, 3, H, W) inputs in [0, 1] with a separable window ``w``."""
    c = x.shape[1]
    maps = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # (N, 5C, H, W), one filter pass for all five
    maps = _filter_separable(maps, w, padding)
    mu_x, mu_y, e_xx, e_yy, e_xy = maps.split(c, dim=1)
    # Population (not sample) covariances: Wang et al. 2004, skimage use_sample_covariance=False, Sparse-VideoGen.
    var_x = e_xx - mu_x * mu_x
    var_y = e_yy - mu_y * mu_y
    cov = e_xy - mu_x * mu_y
    c1, c2 = SSIM_K1**2, SSIM_K2**2  # data range 1
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))
    # Averaging over channels and pixels at once equals skimage's mean over channels of per-channel means (every
    # channel has the same number of pixels).
    return s.mean(dim=(1, 2, 3))


def ssim(
    a: VideoLike,
    b: VideoLike,
    window: str = "gaussian",
    *,
    border: Optional[str] = None,
    per_frame: bool = False,
    layout: Optional[str] = None,
    device: Optional[Union[str, torch.device]] = None,
    dtype: torch.dtype = torch.float64,
) -> Union[float, np.ndarray]:
    """Structural similarity between two videos on RGB, computed per frame and averaged over frames.

    Two variants, both with data range 1 (frames in [0, 1]), ``C1 = 0.01**2``, ``C2 = 0.03**2``, population
    covariances, each channel filtered separately and the SSIM map averaged over channels and pixels:

    - ``window="gaussian"`` (the default): the standard SSIM of Wang et al. 2004, an 11-tap Gaussian window with
      sigma 1.5, averaged over the pixels whose window lies inside the frame (``border="valid"``). Identical, up to
      float rounding, to ``skimage.metrics.structural_similarity(a_t, b_t, gaussian_weights=True, sigma=1.5,
      use_sample_covariance=False, data_range=1, channel_axis=-1)``, which filters the whole frame and then crops the
      5-pixel border.
    - ``window="uniform"``: the Sparse-VideoGen variant, an 11x11 box window. Its default ``border="zero"`` reproduces
      Sparse-VideoGen's ``F.avg_pool2d(x, 11, stride=1, padding=5)``: zero padding, the box always divided by 121,
      and the map averaged over every pixel, border included. With ``border="valid"`` it is instead identical to
      ``structural_similarity(a_t, b_t, win_size=11, gaussian_weights=False, use_sample_covariance=False,
      data_range=1, channel_axis=-1)`` (skimage's default ``use_sample_covariance=True`` scales the variances by
      121 / 120 and matches neither).

    Both run in torch as a separable filter (shifted multiply-adds), on GPU or CPU.

    Args:
        a (`np.ndarray` or `torch.Tensor`): first video, uint8 or float in [0, 1], (T, H, W, 3) or (T, 3, H, W).
        b (`np.ndarray` or `torch.Tensor`): second video, same number of frames and resolution as ``a``.
        window (`str`, defaults to `"gaussian"`): ``"gaussian"`` or ``"uniform"``.
        border (`str`, *optional*): ``"valid"`` (only windows fully inside the frame; needs H, W >= 11) or ``"zero"``
            (zero-padded, every pixel); defaults to ``"valid"`` for the Gaussian window and ``"zero"`` for the uniform
            one, i.e. to skimage's and Sparse-VideoGen's conventions respectively.
        per_frame (`bool`, defaults to `False`): return the per-frame values instead of their mean.
        layout (`str`, *optional*): ``"THWC"`` or ``"TCHW"``; detected from the shape when omitted.
        device (`str` or `torch.device`, *optional*): where to compute; defaults to the first tensor input's device.
        dtype (`torch.dtype`, defaults to `torch.float64`): computation dtype; float32 is faster on GPU and differs
            by ~1e-7 (the variances are differences of nearby numbers).

    Returns:
        `float` (mean SSIM, 1.0 for identical videos) or `np.ndarray` of shape (T,) when ``per_frame`` is set.

    Raises:
        ValueError: shape mismatch (the message names both shapes), unknown ``window``/``border``, or frames smaller
            than the window with ``border="valid"``.
    """
    if border is None:
        border = "valid" if window == "gaussian" else "zero"
    if border not in ("valid", "zero"):
        raise ValueError(f"border must be 'valid' or 'zero', got {border!r}")
    va, vb, dev = _pair(a, b, layout, device)
    w = _window_1d(window, torch.float64, torch.device("cpu"))  # taps become Python floats
    height, width = va.shape[2], va.shape[3]
    if border == "valid" and min(height, width) < SSIM_WINDOW_SIZE:
        raise ValueError(
            f"frames of {height}x{width} are smaller than the {SSIM_WINDOW_SIZE}x{SSIM_WINDOW_SIZE} window"
        )
    padding = 0 if border == "valid" else SSIM_WINDOW_SIZE // 2
    values = [_ssim_frames(x, y, w, padding) for x, y in _chunks(va, vb, dev, dtype)]
    frames = torch.cat(values).double().cpu().numpy()
    return frames if per_frame else float(frames.mean())


# ---------------------------------------------------------------------------------------------------------------------
# LPIPS
# ---------------------------------------------------------------------------------------------------------------------

# The torchvision ImageNet checkpoints that lpips.LPIPS(net=...) loads for its trunk (the LPIPS linear heads ship
# inside the lpips wheel). torchvision caches them as TORCH_HOME/hub/checkpoints/<filename>.
LPIPS_TRUNK_CHECKPOINTS: Dict[str, Tuple[str, str, str]] = {
    # net: (torchvision builder, checkpoint filename, url)
    "alex": ("alexnet", "alexnet-owt-7be5be79.pth", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"),
    "vgg": ("vgg16", "vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth"),
    "squeeze": (
        "squeezenet1_1",
        "squeezenet1_1-b8a52dc0.pth",
        "https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth",
    ),
}

_LPIPS_CACHE: Dict[Tuple[str, str], torch.nn.Module] = {}


def _checkpoint_dir() -> str:
    # torch.hub.get_dir() re-reads TORCH_HOME on every call, so a test or a user can redirect it at run time.
    return os.path.join(torch.hub.get_dir(), "checkpoints")


def _how_to_get_weights(net: str) -> str:
    builder, filename, url = LPIPS_TRUNK_CHECKPOINTS[net]
    ckpt_dir = _checkpoint_dir()
    return (
        f'To get them: on a machine with network access run `python -c "import torchvision; '
        f"torchvision.models.{builder}(weights='DEFAULT')\"` (or download {url}) and copy {filename} into "
        f"{ckpt_dir} (that is $TORCH_HOME/hub/checkpoints; TORCH_HOME defaults to ~/.cache/torch); or pass "
        f"allow_download=True where the network is reachable; or pass lpips_model= an already-built "
        f"lpips.LPIPS(net={net!r})."
    )


@contextlib.contextmanager
def _socket_timeout(seconds: float):
    # torch.hub's urlopen has no timeout of its own: without this an unreachable host can block for minutes.
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def load_lpips_model(
    net: str = "alex",
    device: Optional[Union[str, torch.device]] = None,
    *,
    allow_download: bool = False,
    download_timeout: float = 20.0,
) -> torch.nn.Module:
    """Build (once per net and device) an ``lpips.LPIPS`` model in eval mode, failing fast when weights are missing.

    Args:
        net (`str`, defaults to `"alex"`): LPIPS trunk, ``"alex"``, ``"vgg"`` or ``"squeeze"``. AlexNet is the LPIPS
            authors' recommendation for a metric; Sparse-VideoGen reports VGG.
        device (`str` or `torch.device`, *optional*): defaults to CPU.
        allow_download (`bool`, defaults to `False`): when the torchvision trunk checkpoint is not cached, let
            torchvision download it. Off by default because the machines this project runs on have no network, and
            the download would otherwise hang until the OS gives up.
        download_timeout (`float`, defaults to 20.0): socket timeout in seconds for that download.

    Returns:
        `torch.nn.Module`: the ``lpips.LPIPS`` model; it expects inputs scaled to [-1, 1].

    Raises:
        RuntimeError: the ``lpips`` package (or the torchvision it imports) cannot be imported, or the trunk
            checkpoint is not cached and cannot be downloaded; the message says how to get it.
    """
    if net not in LPIPS_TRUNK_CHECKPOINTS:
        raise ValueError(f"net must be one of {sorted(LPIPS_TRUNK_CHECKPOINTS)}, got {net!r}")
    dev = torch.device(device if device is not None else "cpu")
    key = (net, str(dev))
    if key in _LPIPS_CACHE:
        return _LPIPS_CACHE[key]
    try:
        lpips_pkg = importlib.import_module("lpips")
    except Exception as exc:  # ImportError, or torchvision's RuntimeError when its build does not match torch
        raise RuntimeError(
            f"LPIPS needs the `lpips` package and a torchvision build matching the installed torch, but importing "
            f"lpips failed ({type(exc).__name__}: {exc}). Install them (`pip install lpips` plus the torchvision "
            "release paired with your torch), or pass lpips_model= an already-built lpips.LPIPS model."
        ) from exc
    _, filename, _ = LPIPS_TRUNK_CHECKPOINTS[net]
    cached = os.path.isfile(os.path.join(_checkpoint_dir(), filename))
    if not cached and not allow_download:
        raise RuntimeError(
            f"LPIPS ({net}) needs the torchvision ImageNet checkpoint {filename}, which is not in "
            f"{_checkpoint_dir()} and downloads are off (allow_download=False). {_how_to_get_weights(net)}"
        )
    try:
        with _socket_timeout(download_timeout):
            model = lpips_pkg.LPIPS(net=net, verbose=False)
    except Exception as exc:  # URLError / socket.timeout / hub errors: all mean "could not get the weights"
        raise RuntimeError(
            f"LPIPS ({net}) could not load its torchvision trunk weights ({type(exc).__name__}: {exc}). "
            f"{_how_to_get_weights(net)}"
        ) from exc
    model = model.eval().requires_grad_(False).to(dev)
    _LPIPS_CACHE[key] = model
    return model


def lpips(
    a: VideoLike,
    b: VideoLike,
    net: str = "alex",
    *,
    lpips_model: Optional[torch.nn.Module] = None,
    batch_size: int = 8,
    per_frame: bool = False,
    allow_download: bool = False,
    layout: Optional[str] = None,
    device: Optional[Union[str, torch.device]] = None,
) -> Union[float, np.ndarray]:
    """LPIPS distance between two videos, computed per frame and averaged over frames (lower is more similar).

    Frames are converted to [0, 1] and then scaled to [-1, 1] before the network, which is what LPIPS was trained on
    (``lpips.LPIPS.forward(..., normalize=True)`` semantics). Sparse-VideoGen's evaluation feeds [0, 1] frames without
    ``normalize=True``; its LPIPS numbers are therefore not comparable to these.

    Args:
        a (`np.ndarray` or `torch.Tensor`): first video, uint8 or float in [0, 1], (T, H, W, 3) or (T, 3, H, W).
        b (`np.ndarray` or `torch.Tensor`): second video, same number of frames and resolution as ``a``.
        net (`str`, defaults to `"alex"`): LPIPS trunk (``"alex"``, ``"vgg"``, ``"squeeze"``), ignored when
            ``lpips_model`` is given.
        lpips_model (`torch.nn.Module`, *optional*): an already-built ``lpips.LPIPS`` (or any module with its call
            signature: two (N, 3, H, W) batches in [-1, 1] -> (N, 1, 1, 1) distances). Used as is, on its own device.
        batch_size (`int`, defaults to 8): frames per forward pass.
        per_frame (`bool`, defaults to `False`): return the per-frame distances instead of their mean.
        allow_download (`bool`, defaults to `False`): see `load_lpips_model`.
        layout (`str`, *optional*): ``"THWC"`` or ``"TCHW"``; detected from the shape when omitted.
        device (`str` or `torch.device`, *optional*): where to build the model and compute; defaults to the first
            tensor input's device.

    Returns:
        `float` (mean LPIPS, 0.0 for identical videos) or `np.ndarray` of shape (T,) when ``per_frame`` is set.

    Raises:
        ValueError: shape mismatch (the message names both shapes).
        RuntimeError: no ``lpips_model`` and the lpips package or its trunk weights are unavailable (see
            `load_lpips_model`; the message says how to get them).
    """
    va, vb, dev = _pair(a, b, layout, device)
    if lpips_model is None:
        lpips_model = load_lpips_model(net, dev, allow_download=allow_download)
    else:
        param = next(iter(lpips_model.parameters()), None)
        if param is not None:
            dev = param.device
    values = []
    with torch.inference_mode():
        for x, y in _chunks(va, vb, dev, torch.float32, frames=batch_size):
            d = lpips_model(x * 2.0 - 1.0, y * 2.0 - 1.0)
            values.append(d.reshape(d.shape[0], -1).mean(dim=1).double())
    frames = torch.cat(values).cpu().numpy()
    return frames if per_frame else float(frames.mean())


# ---------------------------------------------------------------------------------------------------------------------
# Video I/O
# ---------------------------------------------------------------------------------------------------------------------


def read_video(path: Union[str, os.PathLike]) -> np.ndarray:
    """Decode a video file (mp4 or anything ffmpeg reads) to RGB frames with imageio's ffmpeg plugin.

    Args:
        path (`str` or `os.PathLike`): the video file.

    Returns:
        `np.ndarray` of dtype uint8 and shape (T, H, W, 3).

    Raises:
        ValueError: the file decodes to no frames.
    """
    import imageio.v2 as iio  # imported here so the metrics work without imageio installed

    reader = iio.get_reader(os.fspath(path), format="FFMPEG")
    try:
        frames = [np.asarray(frame) for frame in reader]
    finally:
        reader.close()
    if not frames:
        raise ValueError(f"{path}: no frames decoded")
    video = np.stack(frames)
    if video.ndim == 3:  # a gray stream decoded without a channel axis
        video = np.repeat(video[..., None], 3, axis=-1)
    return np.ascontiguousarray(video[..., :3], dtype=np.uint8)


def write_video(
    path: Union[str, os.PathLike],
    frames: VideoLike,
    fps: float = 16,
    *,
    quality: Optional[float] = 5.0,
    layout: Optional[str] = None,
) -> None:
    """Encode frames to an H.264 mp4 (libx264) with imageio's ffmpeg plugin, keeping the exact resolution.

    ``macro_block_size=1`` stops imageio from rescaling sizes that are not multiples of 16 (64x64, 480x832 and 720x1280
    are kept as they are). The pixel format is yuv420p, the one every player reads, which needs an even width and
    height; a frame with an odd side is written as yuv444p instead, so its resolution is still kept exactly.

    Args:
        path (`str` or `os.PathLike`): output file, usually ``*.mp4``.
        frames (`np.ndarray` or `torch.Tensor`): uint8, or float in [0, 1] (rounded to the nearest level), in
            (T, H, W, 3) or (T, 3, H, W).
        fps (`float`, defaults to 16): frame rate (Wan 2.1 generates 16 fps video).
        quality (`float`, *optional*, defaults to 5.0): imageio's 0..10 scale, mapped to x264 ``crf = int((1 -
            quality / 10) * 51)``; 5.0 (crf 25) is what Diffusers' ``export_to_video`` writes, 10 is crf 0 (lossless
            in YUV, the RGB<->YUV conversion still rounds). ``None`` leaves x264's default crf 23.
        layout (`str`, *optional*): ``"THWC"`` or ``"TCHW"``; detected from the shape when omitted.
    """
    import imageio.v2 as iio

    video = _Video(frames, layout, "frames")
    if video.is_uint8:
        data = video.tchw
    else:
        data = (video.tchw.float().clamp(0.0, 1.0) * 255.0).round_().to(torch.uint8)
    data = data.permute(0, 2, 3, 1).cpu().contiguous().numpy()
    height, width = data.shape[1:3]
    pixelformat = "yuv420p" if height % 2 == 0 and width % 2 == 0 else "yuv444p"
    writer = iio.get_writer(
        os.fspath(path),
        format="FFMPEG",
        fps=fps,
        codec="libx264",
        pixelformat=pixelformat,
        quality=quality,
        macro_block_size=1,
        ffmpeg_log_level="error",
    )
    try:
        for frame in data:
            writer.append_data(frame)
    finally:
        writer.close()


_METRICS = ("psnr", "ssim", "lpips")


def compare_videos(
    path_a: Union[str, os.PathLike],
    path_b: Union[str, os.PathLike],
    metrics: Sequence[str] = ("psnr", "ssim"),
    *,
    ssim_window: str = "gaussian",
    lpips_net: str = "alex",
    lpips_model: Optional[torch.nn.Module] = None,
    max_db: float = 100.0,
    device: Optional[Union[str, torch.device]] = None,
) -> Dict[str, Union[float, int]]:
    """Decode two video files and compare them frame by frame.

    Args:
        path_a (`str` or `os.PathLike`): reference video (typically the dense-attention run).
        path_b (`str` or `os.PathLike`): video to evaluate (the sparse run with the same prompt and seed).
        metrics (`Sequence[str]`, defaults to `("psnr", "ssim")`): any of ``"psnr"``, ``"ssim"``, ``"lpips"``.
        ssim_window (`str`, defaults to `"gaussian"`): see `ssim`.
        lpips_net (`str`, defaults to `"alex"`): see `lpips`.
        lpips_model (`torch.nn.Module`, *optional*): see `lpips`.
        max_db (`float`, defaults to 100.0): see `psnr`.
        device (`str` or `torch.device`, *optional*): where to compute; CPU by default.

    Returns:
        `dict`: the requested metrics by name, plus ``num_frames``, ``height`` and ``width``.

    Raises:
        ValueError: unknown metric, or the two videos differ in frame count or resolution (the message names both).
    """
    unknown = [m for m in metrics if m not in _METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {list(_METRICS)}")
    a, b = read_video(path_a), read_video(path_b)
    if a.shape != b.shape:
        raise ValueError(
            f"videos differ: {os.fspath(path_a)} is {a.shape[0]} frames of {a.shape[1]}x{a.shape[2]} (shape "
            f"{a.shape}), {os.fspath(path_b)} is {b.shape[0]} frames of {b.shape[1]}x{b.shape[2]} (shape {b.shape})"
        )
    result: Dict[str, Union[float, int]] = {}
    for name in metrics:
        if name == "psnr":
            result["psnr"] = psnr(a, b, max_db=max_db, device=device)
        elif name == "ssim":
            result["ssim"] = ssim(a, b, ssim_window, device=device)
        else:
            result["lpips"] = lpips(a, b, lpips_net, lpips_model=lpips_model, device=device)
    result.update(num_frames=int(a.shape[0]), height=int(a.shape[1]), width=int(a.shape[2]))
    return result
