"""VBench quality dimensions, run in a separate virtual environment, plus a native temporal-flickering score.

VBench (``pip install vbench``, 0.1.5) pins ``transformers==4.33.2``, ``numpy<2`` and ``timm<=1.0.12`` and pulls pyiqa,
openai-clip, decord, opencv-python and detectron-style dependencies: installing it next to a current Diffusers would
downgrade half of the main environment. So it lives in its own venv and is driven through a subprocess that calls
``VBench.evaluate(..., mode="custom_input")`` on a folder of videos (no VBench prompt suite needed: the prompt is
taken from the file name, and the dimensions here do not use it).

Recipe that `ensure_vbench_env` runs (checked on x86_64 / Python 3.11: ~3 minutes from the local wheel cache, 6.7 GB)::

    python -m venv VENV
    VENV/bin/pip install torch==2.14.1 torchvision==0.29.1   # first, and as a pair that imports together
    VENV/bin/pip install vbench==0.1.5

Why torch first and why that pair: vbench's metadata does not list torch, yet it imports torch *and* torchvision at
import time, and pyiqa / openai-clip require them unpinned, which would otherwise pull the newest CUDA torch. The
CPU-only ``torch==2.13.0`` wheel of this workplace cannot be used: PyPI's torchvision 0.28 fails to import next to it
(``operator torchvision::nms does not exist``). On a machine with network any matching torch/torchvision pair works
(pass ``torch_requirements=``).

Model weights: VBench downloads them with wget / git on first use. With ``local=True`` (the default here) it looks
for them under ``$VBENCH_CACHE_DIR`` (default ``~/.cache/vbench``) first; `VBENCH_WEIGHTS` lists, per dimension, the
files that must be there. `run_vbench` checks them before starting a dimension, so an offline machine gets an
immediate error naming the missing file instead of a wget failure deep inside VBench. ``temporal_flickering`` needs
no weights, which is why it also has a native implementation here (`temporal_flickering`) for tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

PathLike = Union[str, os.PathLike]

VBENCH_REQUIREMENT = "vbench==0.1.5"
TORCH_REQUIREMENTS = ("torch==2.14.1", "torchvision==0.29.1")

DEFAULT_DIMENSIONS = (
    "subject_consistency",
    "background_consistency",
    "imaging_quality",
    "aesthetic_quality",
    "motion_smoothness",
    "dynamic_degree",
    "temporal_flickering",
)

# Files VBench 0.1.5 (utils.init_submodules with local=True, aesthetic_quality.get_aesthetic_model) loads for each
# dimension, relative to $VBENCH_CACHE_DIR; a path ending in "/" is a directory (a git clone).
VBENCH_WEIGHTS: Dict[str, tuple] = {
    "subject_consistency": (
        "dino_model/facebookresearch_dino_main/",  # git clone https://github.com/facebookresearch/dino
        "dino_model/dino_vitbase16_pretrain.pth",
    ),
    "background_consistency": ("clip_model/ViT-B-32.pt",),
    "imaging_quality": ("pyiqa_model/musiq_spaq_ckpt-358bb6af.pth",),
    "aesthetic_quality": ("clip_model/ViT-L-14.pt", "aesthetic_model/emb_reader/sa_0_4_vit_l_14_linear.pth"),
    "motion_smoothness": ("amt_model/amt-s.pth",),
    "dynamic_degree": ("raft_model/models/raft-things.pth",),
    "temporal_flickering": (),
}
# Of those, the ones VBench reads from the cache only in local mode; otherwise it fetches them through torch.hub
# (DINO) or clip.load (CLIP), whose own caches then have to hold them.
_LOCAL_MODE_ONLY = frozenset(
    {
        "dino_model/facebookresearch_dino_main/",
        "dino_model/dino_vitbase16_pretrain.pth",
        "clip_model/ViT-B-32.pt",
        "clip_model/ViT-L-14.pt",
    }
)

# VBench's custom_input mode only picks up files with these suffixes.
_VIDEO_SUFFIXES = (".mp4", ".gif", ".jpg", ".png")

# What the subprocess runs inside the VBench venv. Arguments come as one JSON string so that paths with spaces survive.
_CHILD_SCRIPT = r"""
import json, os, sys
args = json.loads(sys.argv[1])
import torch
import vbench
from vbench import VBench
device = args["device"]
if device == "auto":
    device = "cuda" if torch.cuda.is_available() else "cpu"
full_info = os.path.join(os.path.dirname(vbench.__file__), "VBench_full_info.json")
bench = VBench(torch.device(device), full_info, args["out_dir"])
bench.evaluate(
    videos_path=args["video_dir"],
    name=args["name"],
    dimension_list=args["dimensions"],
    local=args["local"],
    mode="custom_input",
)
print("DIT_SPARSE_VBENCH_DEVICE=" + str(device))
"""

_IMPORT_CHECK = "import torch, torchvision, cv2, decord, vbench; print(vbench.__file__)"


def default_vbench_env() -> Path:
    """Where the VBench venv lives unless told otherwise: ``$DIT_SPARSE_VBENCH_VENV`` or
    ``~/.cache/dit_sparse/vbench-venv``.

    Returns:
        `pathlib.Path`: the venv directory (it may not exist yet).
    """
    env = os.environ.get("DIT_SPARSE_VBENCH_VENV")
    return Path(env) if env else Path.home() / ".cache" / "dit_sparse" / "vbench-venv"


def _venv_python(path: Path) -> Path:
    return path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _env_ready(python: Path) -> bool:
    if not python.exists():
        return False
    probe = subprocess.run([str(python), "-c", _IMPORT_CHECK], capture_output=True, text=True, timeout=600)
    return probe.returncode == 0


def ensure_vbench_env(
    path: Optional[PathLike] = None,
    *,
    torch_requirements: Sequence[str] = TORCH_REQUIREMENTS,
    vbench_requirement: str = VBENCH_REQUIREMENT,
    base_python: Optional[str] = None,
    timeout: float = 3600.0,
) -> str:
    """Create (once) a virtual environment with VBench and return its Python interpreter.

    Nothing is done when the venv already imports torch, torchvision, cv2, decord and vbench. Otherwise it runs the
    recipe of the module docstring; pip's output goes to ``<path>/dit_sparse_install.log``.

    Args:
        path (`str` or `os.PathLike`, *optional*): venv directory; defaults to `default_vbench_env`.
        torch_requirements (`Sequence[str]`, defaults to `TORCH_REQUIREMENTS`): installed first; must be a torch and
            torchvision pair that import together.
        vbench_requirement (`str`, defaults to `"vbench==0.1.5"`): the VBench release (the dimensions and custom-input
            API used here are those of 0.1.5).
        base_python (`str`, *optional*): interpreter that creates the venv; defaults to the current one.
        timeout (`float`, defaults to 3600): seconds allowed for each pip step.

    Returns:
        `str`: path of the venv's ``python``.

    Raises:
        RuntimeError: a step failed; the message carries the end of the pip log.
    """
    venv = Path(path) if path is not None else default_vbench_env()
    python = _venv_python(venv)
    if _env_ready(python):
        return str(python)
    venv.parent.mkdir(parents=True, exist_ok=True)
    log_path = venv / "dit_sparse_install.log"
    steps: List[List[str]] = []
    if not python.exists():
        steps.append([base_python or sys.executable, "-m", "venv", str(venv)])
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check"]
    steps.append(pip + list(torch_requirements))
    steps.append(pip + [vbench_requirement])
    for cmd in steps:
        venv.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a") as log:
            log.write(f"\n$ {' '.join(cmd)}\n")
            log.flush()
            try:
                proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
            except subprocess.TimeoutExpired as exc:
                raise RuntimeError(f"VBench env: `{' '.join(cmd)}` timed out after {timeout:.0f} s") from exc
        if proc.returncode != 0:
            tail = log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(
                f"VBench env: `{' '.join(cmd)}` failed (exit {proc.returncode}); log {log_path}:\n{tail}"
            )
    if not _env_ready(python):
        raise RuntimeError(f"VBench env at {venv} was installed but `{_IMPORT_CHECK}` still fails")
    return str(python)


def missing_vbench_weights(
    dimensions: Sequence[str], cache_dir: Optional[PathLike] = None, *, local: bool = True
) -> Dict[str, List[str]]:
    """List, per dimension, the VBench weight files that are not in the cache (see `VBENCH_WEIGHTS`).

    Args:
        dimensions (`Sequence[str]`): VBench dimension names.
        cache_dir (`str` or `os.PathLike`, *optional*): defaults to ``$VBENCH_CACHE_DIR`` or ``~/.cache/vbench``.
        local (`bool`, defaults to `True`): VBench's local mode; without it the DINO and CLIP files are not looked
            for in the cache (VBench fetches them through torch.hub / clip.load instead).

    Returns:
        `dict`: dimension -> missing absolute paths; dimensions with nothing missing are left out.
    """
    root = Path(cache_dir or os.environ.get("VBENCH_CACHE_DIR") or Path.home() / ".cache" / "vbench")
    missing: Dict[str, List[str]] = {}
    for dim in dimensions:
        if dim not in VBENCH_WEIGHTS:
            raise ValueError(f"unsupported VBench dimension {dim!r}; supported: {sorted(VBENCH_WEIGHTS)}")
        absent = [
            str(root / rel)
            for rel in VBENCH_WEIGHTS[dim]
            if (local or rel not in _LOCAL_MODE_ONLY)
            and not ((root / rel).is_dir() if rel.endswith("/") else (root / rel).is_file())
        ]
        if absent:
            missing[dim] = absent
    return missing


def run_vbench(
    video_dir: PathLike,
    dimensions: Sequence[str] = DEFAULT_DIMENSIONS,
    out_json: Optional[PathLike] = None,
    python: Optional[PathLike] = None,
    *,
    device: str = "auto",
    local: bool = True,
    cache_dir: Optional[PathLike] = None,
    strict: bool = True,
    work_dir: Optional[PathLike] = None,
    timeout: Optional[float] = None,
) -> dict:
    """Score a folder of videos on VBench dimensions (custom-input mode) and gather the results into one JSON.

    Each dimension runs in its own subprocess of the VBench venv, so one dimension that fails (say, missing weights)
    does not lose the others when ``strict=False``.

    Args:
        video_dir (`str` or `os.PathLike`): folder of videos (``.mp4``, ``.gif``, ``.jpg``, ``.png``; VBench ignores
            other files). The file name, minus a trailing ``-<n>``, is the prompt VBench records.
        dimensions (`Sequence[str]`, defaults to `DEFAULT_DIMENSIONS`): VBench dimensions to compute; those of
            `VBENCH_WEIGHTS` (the ones that need no prompt-suite metadata).
        out_json (`str` or `os.PathLike`, *optional*): where to write the gathered results.
        python (`str` or `os.PathLike`, *optional*): the VBench venv's interpreter; defaults to the one of
            `default_vbench_env` (create it with `ensure_vbench_env`).
        device (`str`, defaults to `"auto"`): ``"cuda"``, ``"cpu"`` or ``"auto"`` (CUDA when available).
        local (`bool`, defaults to `True`): VBench's local mode: the DINO and CLIP weights are read from ``cache_dir``
            rather than fetched through torch.hub / clip.load (the other dimensions always read ``cache_dir``). The
            files expected there are checked before each dimension starts.
        cache_dir (`str` or `os.PathLike`, *optional*): ``VBENCH_CACHE_DIR`` for the subprocess; defaults to the
            inherited environment variable or ``~/.cache/vbench``.
        strict (`bool`, defaults to `True`): raise on the first failing dimension; otherwise record its error under
            ``"errors"`` and go on.
        work_dir (`str` or `os.PathLike`, *optional*): where VBench writes its raw per-dimension files and logs;
            a temporary directory (removed afterwards) when omitted.
        timeout (`float`, *optional*): seconds allowed per dimension.

    Returns:
        `dict`: ``{"vbench": requirement, "video_dir", "device", "num_videos", "dimensions": {dim: {"score": float,
        "per_video": {file name: value}, "seconds": float}}, "errors": {dim: message}}``.

    Raises:
        ValueError: ``video_dir`` has no video, or an unsupported dimension is asked for.
        RuntimeError: no VBench venv, missing weights or a failing dimension, when ``strict``.
    """
    video_dir = Path(video_dir).resolve()
    videos = (
        sorted(p.name for p in video_dir.iterdir() if p.suffix.lower() in _VIDEO_SUFFIXES)
        if video_dir.is_dir()
        else []
    )
    if not videos:
        raise ValueError(f"{video_dir}: no {'/'.join(_VIDEO_SUFFIXES)} files to evaluate")
    dimensions = list(dimensions)
    cache_root = cache_dir or os.environ.get("VBENCH_CACHE_DIR") or str(Path.home() / ".cache" / "vbench")
    missing = missing_vbench_weights(dimensions, cache_root, local=local)  # also rejects unsupported dimensions
    python = Path(python) if python is not None else _venv_python(default_vbench_env())
    if not python.exists():
        raise RuntimeError(f"no VBench interpreter at {python}: create the venv with ensure_vbench_env()")

    env = dict(os.environ, VBENCH_CACHE_DIR=str(cache_root))
    result: dict = {
        "vbench": VBENCH_REQUIREMENT,
        "video_dir": str(video_dir),
        "device": device,
        "num_videos": len(videos),
        "dimensions": {},
        "errors": {},
    }

    def fail(dim: str, message: str) -> None:
        if strict:
            raise RuntimeError(f"VBench {dim}: {message}")
        result["errors"][dim] = message

    with tempfile.TemporaryDirectory(prefix="vbench-") as tmp:
        root = Path(work_dir) if work_dir is not None else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        for dim in dimensions:
            if dim in missing:
                fail(dim, f"missing weights {missing[dim]} (VBENCH_CACHE_DIR={cache_root}); see VBENCH_WEIGHTS")
                continue
            out_dir = root / dim
            out_dir.mkdir(parents=True, exist_ok=True)
            args = {
                "video_dir": str(video_dir),
                "name": dim,
                "dimensions": [dim],
                "local": local,
                "device": device,
                "out_dir": str(out_dir),
            }
            start = time.monotonic()
            try:
                proc = subprocess.run(
                    [str(python), "-c", _CHILD_SCRIPT, json.dumps(args)],
                    cwd=out_dir,  # VBench writes a few relative paths (e.g. the aesthetic head cache)
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=timeout,
                )
            except subprocess.TimeoutExpired:
                fail(dim, f"timed out after {timeout} s")
                continue
            (out_dir / "vbench.log").write_text(proc.stdout + proc.stderr)
            raw_path = out_dir / f"{dim}_eval_results.json"
            if proc.returncode != 0 or not raw_path.is_file():
                fail(dim, f"subprocess exit {proc.returncode}: {(proc.stdout + proc.stderr)[-2000:]}")
                continue
            for line in proc.stdout.splitlines():
                if line.startswith("DIT_SPARSE_VBENCH_DEVICE="):
                    result["device"] = line.split("=", 1)[1]
            score, per_video = json.loads(raw_path.read_text())[dim]
            result["dimensions"][dim] = {
                "score": float(score),
                "per_video": {Path(v["video_path"]).name: v["video_results"] for v in per_video},
                "seconds": round(time.monotonic() - start, 3),
            }
    if out_json is not None:
        Path(out_json).parent.mkdir(parents=True, exist_ok=True)
        Path(out_json).write_text(json.dumps(result, indent=2))
    return result


def temporal_flickering(video: Union[np.ndarray, "os.PathLike", str]) -> float:
    """VBench's temporal-flickering score of one video, computed natively (no VBench, no weights).

    Same arithmetic as ``vbench/temporal_flickering.py`` (0.1.5): the mean absolute difference between consecutive
    frames in 0..255 (``cv2.absdiff`` on float32, ``np.mean`` per frame pair, then the mean over pairs) and
    ``score = (255 - mean) / 255``; 1.0 for a static video. VBench reads frames with OpenCV in BGR order; the frames
    here are flipped to BGR as well so that even the float32 summation order, hence the last bits, agree.

    Args:
        video (`np.ndarray` or path): uint8 frames (T, H, W, 3) in RGB, or a video file decoded with
            `dit_sparse.eval.metrics.read_video`.

    Returns:
        `float`: the score in [0, 1], higher is steadier.

    Raises:
        ValueError: fewer than two frames, or not a uint8 (T, H, W, 3) array.
    """
    if not isinstance(video, np.ndarray):
        from .metrics import read_video

        video = read_video(video)
    if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames (T, H, W, 3), got {video.dtype} {video.shape}")
    if video.shape[0] < 2:
        raise ValueError(f"temporal flickering needs at least 2 frames, got {video.shape[0]}")
    frames = np.ascontiguousarray(video[..., ::-1]).astype(np.float32)  # BGR, as cv2.VideoCapture returns
    maes = np.array([np.mean(np.abs(frames[i] - frames[i + 1])) for i in range(len(frames) - 1)])
    return (255.0 - np.mean(maes).item()) / 255.0
