"""What the probe scripts in bench/ share: their output's header, semantic at a shape's preset on photographic
q / k, one shape's row added to the output, printed, and the JSON rewritten at once (a timeout later keeps what
was measured), and the CUDA time of a call's kernels."""

import json
import os
import sys

import torch

import dit_sparse as ds
from dit_sparse.eval.bench import VIDEO_SHAPES, _video_qkv, kernel_cuda_ms
from dit_sparse.patterns import make_pattern
from dit_sparse.pipelines.presets import PRESETS
from dit_sparse.schedule import BoundedCache, PlanCache


def start(script: str) -> dict:
    """The output's header: commit (``DIT_SPARSE_COMMIT``), the command line, the device; rows go under "shapes"."""
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    return {"commit": os.environ.get("DIT_SPARSE_COMMIT"),
            "command": f"python bench/{script} " + " ".join(sys.argv[1:]), "device": device, "shapes": {}}


def preset_semantic(shape: str):
    """geometry, q, k, v (photographic) of ``shape`` and semantic at its family's preset on every call (no dense
    steps or layers), with an empty plan cache: ``(geometry, q, k, v, pattern, cache)``."""
    geometry, q, k, v = _video_qkv(shape, "photo")
    options = PRESETS[VIDEO_SHAPES[shape][4]].sparse_options("semantic")
    options.update(dense_steps=0, dense_layers=0, min_sparse_tokens=0)
    return geometry, q, k, v, make_pattern(ds.make_config("semantic", **options)), PlanCache(shared=BoundedCache())


def record(out: dict, path: str, shape: str, row: dict) -> None:
    out["shapes"][shape] = row
    print(shape, json.dumps(row), flush=True)
    with open(path, "w") as f:
        json.dump(out, f, indent=2)


def kernel_ms(fn) -> float:
    """The CUDA time of ``fn``'s kernels, the profiler's sum (after one call outside it)."""
    return kernel_cuda_ms(fn)
