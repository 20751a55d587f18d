"""One front door over several block-sparse attention engines.

``block_sparse_attention(q, k, v, layout, backend="auto")`` validates inputs, applies the layout's token permutation,
runs the chosen engine and restores the token order. Engines register themselves in ``_BACKENDS`` with an
availability check, so a missing optional dependency (FlashAttention-4, Triton) only removes that engine.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import torch

from ..layout import BlockLayout
from .reference import reference_block_sparse_attention

BACKENDS = ("auto", "fa4", "triton", "flex", "reference")


@dataclass
class _Backend:
    name: str
    # available(device, dtype, head_dim, kind) -> None when usable, else the reason it is not.
    available: Callable[[torch.device, torch.dtype, int, str], Optional[str]]
    # run(q, k, v, layout, scale, return_lse) on permuted (B, H, L, D) tensors -> out or (out, lse)
    run: Callable


_BACKENDS: Dict[str, _Backend] = {}
_AUTO_CACHE: Dict[Tuple, str] = {}
AUTO_ORDER_CUDA = ("fa4", "triton", "flex")


def register_backend(name: str, available, run) -> None:
    """Registers a kernel engine under ``name`` (used by the kernel modules of this package)."""
    _BACKENDS[name] = _Backend(name, available, run)
    _AUTO_CACHE.clear()


def _reference_available(device, dtype, head_dim, kind):
    return None


def _reference_run(q, k, v, layout, scale, return_lse):
    return reference_block_sparse_attention(q, k, v, layout, scale, return_lse)


register_backend("reference", _reference_available, _reference_run)

# Optional engines: each module registers itself when its dependencies import.
for _mod in ("triton_block_sparse", "flex", "fa4"):
    try:
        __import__(f"{__name__}.{_mod}")
    except ImportError:
        pass


def available_backends(device="cpu", dtype=torch.float16, head_dim: int = 128, kind: str = "fixed") -> Dict[str, str]:
    """Maps every known backend to ``"ok"`` or the reason it cannot run for these inputs."""
    device = torch.device(device)
    result = {}
    for name in BACKENDS[1:]:
        be = _BACKENDS.get(name)
        if be is None:
            result[name] = "not installed (its optional dependency did not import)"
        else:
            result[name] = be.available(device, dtype, head_dim, kind) or "ok"
    return result


def resolve_backend(backend: str, device, dtype, head_dim: int, kind: str = "fixed") -> str:
    """Turns ``backend`` ('auto' or a name) into the engine that will run, or raises a clear ``ValueError``.

    The ``DIT_SPARSE_BACKEND`` environment variable overrides ``'auto'``. The automatic choice is made once per
    (device type, dtype, head_dim, layout kind) and cached.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    device = torch.device(device)
    if backend == "auto":
        env = os.environ.get("DIT_SPARSE_BACKEND", "").strip()
        if env and env != "auto":
            if env not in BACKENDS:
                raise ValueError(f"DIT_SPARSE_BACKEND={env!r} is not a backend; choose one of {', '.join(BACKENDS)}")
            backend = env
    if backend != "auto":
        be = _BACKENDS.get(backend)
        if be is None:
            raise ValueError(
                f"backend {backend!r} is not installed here; "
                + ("pip install 'dit-sparse[fa4]'" if backend == "fa4" else "use backend='auto' or 'reference'")
            )
        reason = be.available(device, dtype, head_dim, kind)
        if reason is not None:
            raise ValueError(f"backend {backend!r} cannot run these inputs: {reason}; use backend='auto'")
        return backend
    key = (device.type, dtype, head_dim, kind)
    if key not in _AUTO_CACHE:
        choice = "reference"
        if device.type == "cuda":
            for name in AUTO_ORDER_CUDA:
                be = _BACKENDS.get(name)
                if be is not None and be.available(device, dtype, head_dim, kind) is None:
                    choice = name
                    break
        _AUTO_CACHE[key] = choice
    return _AUTO_CACHE[key]


def _check_inputs(q, k, v, layout: BlockLayout):
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(
            "q, k, v must be (batch, heads, seq_len, head_dim); "
            f"got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    b, h, lq, d = q.shape
    if k.shape[:2] != (b, h) or v.shape[:3] != k.shape[:3] or k.shape[-1] != d:
        raise ValueError(f"incompatible q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if layout.seq_len_q != lq or layout.seq_len_kv != k.shape[2]:
        raise ValueError(
            f"layout was built for seq_len_q={layout.seq_len_q}, seq_len_kv={layout.seq_len_kv} but got "
            f"q length {lq} and k length {k.shape[2]}; rebuild the layout for this sequence"
        )
    lb, lh = layout.kv_indices.shape[:2]
    if lb not in (1, b) or lh not in (1, h):
        raise ValueError(f"layout has batch {lb} and heads {lh}; inputs have batch {b} and heads {h}")


def _gather_tokens(x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    b, h, _, d = x.shape
    return x.gather(2, perm.expand(b, h, -1).unsqueeze(-1).expand(-1, -1, -1, d))


def block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layout: BlockLayout,
    *,
    backend: str = "auto",
    return_lse: bool = False,
    scale: Optional[float] = None,
):
    """Attention restricted to the key blocks listed in ``layout``.

    Args:
        q, k, v (`torch.Tensor` (B, H, L, D)): queries, keys and values.
        layout (`BlockLayout`): which key blocks each query block computes (may carry a token permutation).
        backend (`str`): "auto" | "fa4" | "triton" | "flex" | "reference".
        return_lse (`bool`): also return the log-sum-exp of the scores per query (natural log), [B, H, L].
        scale (`float`, optional): softmax scale, default ``1 / sqrt(D)``.

    Returns:
        ``out`` (B, H, L, D) in q's dtype, or ``(out, lse)`` when ``return_lse``. A query block with no key blocks
        gives zeros and lse = -inf.
    """
    _check_inputs(q, k, v, layout)
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    name = resolve_backend(backend, q.device, q.dtype, q.shape[-1], layout.kind)
    if layout.q_perm is not None:
        q = _gather_tokens(q, layout.q_perm)
    if layout.kv_perm is not None:
        k = _gather_tokens(k, layout.kv_perm)
        v = _gather_tokens(v, layout.kv_perm)
    # No copies here: q, k, v are usually transposed views of Diffusers' (B, L, H, D) tensors; engines read strides.
    result = _BACKENDS[name].run(q, k, v, layout, scale, return_lse)
    out, lse = result if return_lse else (result, None)
    if layout.q_perm is not None:
        perm = layout.q_perm.expand(out.shape[0], out.shape[1], -1)
        out = torch.empty_like(out).scatter_(2, perm.unsqueeze(-1).expand_as(out), out)
        if lse is not None:
            lse = torch.empty_like(lse).scatter_(2, perm, lse)
    return (out, lse) if return_lse else out


__all__ = [
    "BACKENDS",
    "available_backends",
    "block_sparse_attention",
    "register_backend",
    "resolve_backend",
]
