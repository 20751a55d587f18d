"""One front door over several block-sparse attention engines.

``block_sparse_attention(q, k, v, layout, backend="auto")`` validates inputs, applies the layout's token permutation,
runs the chosen engine and restores the token order. Engines register themselves in ``_BACKENDS`` with an
availability check, so a missing optional dependency (FlashAttention-4, Triton) only removes that engine.

Checks, as in Diffusers' ``attention_dispatch``: dtypes, devices and shapes (metadata only, free) are always checked.
The layout's index values (in range, increasing, permutations that are permutations) need a device-to-host sync, so
on a GPU they are checked only on request: ``check_layout=True`` or the environment variable
``DIT_SPARSE_CHECK_LAYOUT=1``. The reference backend on the CPU always checks them (no sync to avoid there).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import torch

from ..config import env_flag
from ..layout import BlockLayout, inverse_permutation
from . import permute as _permute
from .reference import run as _reference_run

BACKENDS = ("auto", "fa4", "triton", "flex", "reference")
DTYPES = (torch.float16, torch.bfloat16, torch.float32)
CHECK_LAYOUT_ENV = "DIT_SPARSE_CHECK_LAYOUT"


@dataclass
class _Backend:
    name: str
    # available(device, dtype, head_dim, kind) -> None when usable, else the reason it is not.
    available: Callable[[torch.device, torch.dtype, int, str], Optional[str]]
    # run(q, k, v, layout, scale, return_lse) on permuted (B, H, L, D) tensors -> out or (out, lse)
    run: Callable
    # blocks(device, block_q, block_kv) -> None when the engine runs blocks of these sizes, else the reason it cannot
    # (None: any size).
    blocks: Optional[Callable[[torch.device, int, int], Optional[str]]] = None
    # run_variable(q, k, v, layout, scale, return_lse) for variable layouts, on q, k, v in the inputs' token order:
    # an engine that reorders tokens anyway (FA4 pads cluster pieces to whole tiles) folds the layout's permutation
    # into its own gather instead of a second pass. None: the front door permutes and calls ``run``.
    run_variable: Optional[Callable] = None
    # auto_skip(kind, blocks) -> True where the engine runs these inputs but "auto" should pick the next one (it was
    # measured slower there). None: auto takes it wherever it runs.
    auto_skip: Optional[Callable[[str, Optional[Tuple[int, int]]], bool]] = None

    def reason(self, device, dtype, head_dim: int, kind: str, blocks: Optional[Tuple[int, int]]) -> Optional[str]:
        why = self.available(device, dtype, head_dim, kind)
        if why is None and blocks is not None and self.blocks is not None:
            why = self.blocks(device, *blocks)
        return why


_BACKENDS: Dict[str, _Backend] = {}
_AUTO_CACHE: Dict[Tuple, str] = {}
AUTO_ORDER_CUDA = ("fa4", "triton", "flex")


def register_backend(name: str, available, run, blocks=None, run_variable=None, auto_skip=None) -> None:
    """Registers a kernel engine under ``name`` (used by the kernel modules of this package)."""
    _BACKENDS[name] = _Backend(name, available, run, blocks, run_variable, auto_skip)
    _AUTO_CACHE.clear()


def _reference_available(device, dtype, head_dim, kind):
    return None


register_backend("reference", _reference_available, _reference_run)

# Optional engines: each module registers itself when its dependencies import.
for _mod in ("triton_block_sparse", "flex", "fa4"):
    try:
        __import__(f"{__name__}.{_mod}")
    except ImportError:
        pass


def available_backends(
    device="cpu", dtype=torch.float16, head_dim: int = 128, kind: str = "fixed",
    blocks: Optional[Tuple[int, int]] = None,
) -> Dict[str, str]:
    """Maps every known backend to ``"ok"`` or the reason it cannot run for these inputs (``blocks``: the layout's
    (block_q, block_kv), when known)."""
    device = torch.device(device)
    result = {}
    for name in BACKENDS[1:]:
        be = _BACKENDS.get(name)
        if be is None:
            result[name] = "not installed (its optional dependency did not import)"
        else:
            result[name] = be.reason(device, dtype, head_dim, kind, blocks) or "ok"
    return result


def resolve_backend(
    backend: str, device, dtype, head_dim: int, kind: str = "fixed", blocks: Optional[Tuple[int, int]] = None
) -> str:
    """Turns ``backend`` ('auto' or a name) into the engine that will run, or raises a clear ``ValueError``.

    The ``DIT_SPARSE_BACKEND`` environment variable overrides ``'auto'``. The automatic choice is made once per
    (device type, dtype, head_dim, layout kind, block sizes) and cached.
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
        reason = be.reason(device, dtype, head_dim, kind, blocks)
        if reason is not None:
            raise ValueError(f"backend {backend!r} cannot run these inputs: {reason}; use backend='auto'")
        return backend
    if torch.compiler.is_compiling():
        # Not through the cache: a graph that read (or filled) it would guard on its contents and recompile once an
        # eager call fills it. The choice is the same either way.
        return _auto_choice(device, dtype, head_dim, kind, blocks)
    key = (device.type, dtype, head_dim, kind, blocks)
    if key not in _AUTO_CACHE:
        _AUTO_CACHE[key] = _auto_choice(device, dtype, head_dim, kind, blocks)
    return _AUTO_CACHE[key]


def _auto_choice(device: torch.device, dtype: torch.dtype, head_dim: int, kind: str,
                 blocks: Optional[Tuple[int, int]] = None) -> str:
    if device.type == "cuda":
        for name in AUTO_ORDER_CUDA:
            be = _BACKENDS.get(name)
            if be is not None and be.reason(device, dtype, head_dim, kind, blocks) is None and not (
                    be.auto_skip is not None and be.auto_skip(kind, blocks)):
                return name
    return "reference"


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _check_inputs(q, k, v, layout: BlockLayout):
    """Metadata checks (no host sync): types, dtypes, devices and shapes of the inputs against the layout."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor):
            raise ValueError(
                f"{name} must be a torch.Tensor (batch, heads, seq_len, head_dim), got {type(x).__name__}"
            )
    if not isinstance(layout, BlockLayout):
        raise ValueError(f"layout must be a dit_sparse.BlockLayout, got {type(layout).__name__}")
    if q.dtype not in DTYPES:
        raise ValueError(
            f"q has dtype {_dtype_name(q.dtype)}; block_sparse_attention takes float16, bfloat16 or float32: "
            "cast q, k and v, e.g. q.to(torch.bfloat16)"
        )
    for name, x in (("k", k), ("v", v)):
        if x.dtype != q.dtype:
            raise ValueError(
                f"{name} has dtype {_dtype_name(x.dtype)} but q has {_dtype_name(q.dtype)}; q, k and v must share one "
                f"dtype: cast them, e.g. {name}.to(q.dtype)"
            )
    for name, x in (("k", k), ("v", v)):
        if x.device != q.device:
            raise ValueError(
                f"{name} is on {x.device} but q is on {q.device}; move q, k and v to one device, "
                f"e.g. {name}.to(q.device)"
            )
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(
            "q, k, v must be (batch, heads, seq_len, head_dim); "
            f"got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    b, h, lq, d = q.shape
    if k.shape[:2] != (b, h) or v.shape[:3] != k.shape[:3] or k.shape[-1] != d:
        raise ValueError(
            f"incompatible q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}: k needs q's batch, heads and "
            "head_dim, v needs k's batch, heads and seq_len"
        )
    if layout.seq_len_q != lq or layout.seq_len_kv != k.shape[2]:
        raise ValueError(
            f"layout was built for seq_len_q={layout.seq_len_q}, seq_len_kv={layout.seq_len_kv} but got "
            f"q length {lq} and k length {k.shape[2]}; rebuild the layout for this sequence"
        )
    lb, lh = layout.kv_indices.shape[:2]
    if lb not in (1, b) or lh not in (1, h):
        raise ValueError(
            f"layout has batch {lb} and heads {lh}; inputs have batch {b} and heads {h}: build the layout with batch "
            f"1 or {b} and heads 1 or {h}"
        )
    tensors = {
        "kv_indices": layout.kv_indices,
        "kv_counts": layout.kv_counts,
        "q_block_starts": layout.q_block_starts,
        "kv_block_starts": layout.kv_block_starts,
        "q_perm": layout.q_perm,
        "kv_perm": layout.kv_perm,
        "kv_valid_len": layout.kv_valid_len,
    }
    for name, t in tensors.items():
        if t is None:
            continue
        if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
            raise ValueError(f"layout.{name} has dtype {_dtype_name(t.dtype)}; it must hold integers (int32/int64)")
        if t.device != q.device:
            raise ValueError(f"layout.{name} is on {t.device} but q is on {q.device}; use layout.to(q.device)")
    for name, length in (("q_perm", lq), ("kv_perm", k.shape[2])):
        perm = tensors[name]
        if perm is not None and (perm.dim() != 3 or perm.shape[0] not in (1, b) or perm.shape[1] not in (1, h)
                                 or perm.shape[2] != length):
            raise ValueError(
                f"layout.{name} has shape {tuple(perm.shape)}; it must be [{b} or 1, {h} or 1, {length}] "
                "(one index per token)"
            )
    for name, n in (("q_block_starts", layout.num_q_blocks), ("kv_block_starts", None)):
        starts = tensors[name]
        if starts is not None and (starts.dim() != 3 or starts.shape[0] not in (1, b)
                                   or starts.shape[1] not in (1, h) or (n is not None and starts.shape[2] != n + 1)):
            want = f"{n + 1}" if n is not None else "num_kv_blocks + 1"
            raise ValueError(f"layout.{name} has shape {tuple(starts.shape)}; it must be [{b} or 1, {h} or 1, {want}]")
    if layout.kv_valid_len is not None and layout.kv_valid_len.numel() not in (1, b):
        raise ValueError(
            f"layout.kv_valid_len has {layout.kv_valid_len.numel()} entries; it needs one per batch element ({b})"
        )


def _check_layout_values(layout: BlockLayout) -> None:
    """Index ranges of ``layout`` (a device-to-host sync: debugging, tests and the CPU reference backend only)."""
    nk = layout.num_kv_blocks
    kmax = layout.kv_indices.shape[-1]
    counts, idx = layout.kv_counts, layout.kv_indices
    if counts.numel() and (int(counts.min()) < 0 or int(counts.max()) > min(nk, kmax)):
        raise ValueError(
            f"layout.kv_counts has values in [{int(counts.min())}, {int(counts.max())}]; they must be in "
            f"[0, {min(nk, kmax)}] (at most the {nk} key blocks and the {kmax} columns of kv_indices); build layouts "
            "with BlockLayout.from_block_mask"
        )
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= max(nk, 1)):
        raise ValueError(
            f"layout.kv_indices has values in [{int(idx.min())}, {int(idx.max())}]; every entry (padding included) "
            f"must be a key block in [0, {nk}); build layouts with BlockLayout.from_block_mask"
        )
    listed = torch.arange(1, kmax, device=idx.device) < counts.unsqueeze(-1)
    if bool((listed & (idx[..., 1:] <= idx[..., :-1])).any()):
        raise ValueError(
            "layout.kv_indices must be strictly increasing within each row's first kv_counts entries; build layouts "
            "with BlockLayout.from_block_mask"
        )
    for name, length in (("q_perm", layout.seq_len_q), ("kv_perm", layout.seq_len_kv)):
        perm = getattr(layout, name)
        if perm is None:
            continue
        expected = torch.arange(length, device=perm.device, dtype=perm.dtype)
        if not bool((perm.sort(dim=-1).values == expected).all()):
            raise ValueError(f"layout.{name} must be a permutation of 0..{length - 1} in every (batch, head) row")
    for name, length, block in (
        ("q_block_starts", layout.seq_len_q, layout.block_q),
        ("kv_block_starts", layout.seq_len_kv, layout.block_kv),
    ):
        starts = getattr(layout, name)
        if starts is None:
            continue
        sizes = starts[..., 1:] - starts[..., :-1]
        if bool((starts[..., 0] != 0).any() or (starts[..., -1] != length).any() or (sizes < 0).any()
                or (sizes > block).any()):
            raise ValueError(
                f"layout.{name} must start at 0, end at {length} and not decrease, with blocks of at most {block} "
                "tokens"
            )
    if layout.kv_valid_len is not None:
        valid = layout.kv_valid_len
        if bool((valid < 0).any() or (valid > layout.seq_len_kv).any()):
            raise ValueError(f"layout.kv_valid_len must be in [0, {layout.seq_len_kv}], got {valid.tolist()}")


def _layout_check_requested(check_layout: Optional[bool]) -> bool:
    if check_layout is not None:
        return bool(check_layout)
    return env_flag(CHECK_LAYOUT_ENV, False)


def _shared_order(perm: torch.Tensor) -> bool:
    # One order for every batch row and head ([1, 1, L]: draft, tile).
    return perm.shape[0] == 1 and perm.shape[1] == 1


def _select_tokens(x: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """x (B, H, L, D) with token i of the result taken from token ``order[i]`` (one order for all rows)."""
    if x.dim() == 4 and x.transpose(1, 2).is_contiguous():
        # x is a view of Diffusers' (B, L, H, D) memory: gathering whole H*D rows there reads and writes contiguous
        # rows and leaves (B, L, H, D) memory for FA4. Per-head gathers of the strided view ran at 1.2 TB/s against
        # 3.2 TB/s for row gathers (FLUX 4096^2, bench/results/*_perm-gather.json).
        return x.transpose(1, 2).index_select(1, order).transpose(1, 2)
    return x.index_select(2, order)


def _gather_tokens(x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """x (B, H, L, D) with its tokens in ``perm``'s order."""
    b, h, _, d = x.shape
    if _shared_order(perm):
        return _select_tokens(x, perm.view(-1))
    if _permute.enabled(x, perm):
        # Per-head orders (semantic) in one pass over contiguous rows (`kernels.permute`).
        return _permute.permute_tokens(x, perm)
    # Elsewhere the expanded-index gather of the strided view. index_select of D-rows of the flat (B*L*H, D) memory
    # was slower at Wan-1.3B 480p (0.26 vs 0.18 ms, ...perm-gather-wan1.3b.json).
    return x.gather(2, perm.expand(b, h, -1).unsqueeze(-1).expand(-1, -1, -1, d))


def _scatter_tokens(y: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """The inverse of `_gather_tokens`: y (B, H, L, ...) in ``perm``'s order back to the original token order."""
    if _shared_order(perm):
        # A gather by the inverse order instead of index_copy_: the scatter ran at half the gather's bandwidth.
        return _select_tokens(y, inverse_permutation(perm.view(-1)))
    if _permute.enabled(y, perm):  # the output (B, H, L, D); the lse (B, H, L) takes torch's scatter below
        return _permute.permute_tokens(y, perm, inverse=True)
    out = torch.empty_like(y)
    idx = perm.expand(y.shape[0], y.shape[1], -1)
    if y.dim() == 4:
        idx = idx.unsqueeze(-1).expand_as(y)
    return out.scatter_(2, idx, y)


def block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layout: BlockLayout,
    *,
    backend: str = "auto",
    return_lse: bool = False,
    scale: Optional[float] = None,
    check_layout: Optional[bool] = None,
):
    """Attention restricted to the key blocks listed in ``layout``.

    Args:
        q, k, v (`torch.Tensor` (B, H, L, D)): queries, keys and values.
        layout (`BlockLayout`): which key blocks each query block computes (may carry a token permutation).
        backend (`str`): "auto" | "fa4" | "triton" | "flex" | "reference".
        return_lse (`bool`): also return the log-sum-exp of the scores per query (natural log), [B, H, L].
        scale (`float`, optional): softmax scale, default ``1 / sqrt(D)``.
        check_layout (`bool`, optional): also check the layout's index values (ranges, order, permutations), which
            costs a device-to-host sync. `None` = when ``DIT_SPARSE_CHECK_LAYOUT=1`` is set, and always for the
            reference backend on the CPU.

    Returns:
        ``out`` (B, H, L, D) in q's dtype, or ``(out, lse)`` when ``return_lse``. A query block with no key blocks
        gives zeros and lse = -inf.
    """
    _check_inputs(q, k, v, layout)
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    name = resolve_backend(backend, q.device, q.dtype, q.shape[-1], layout.kind, (layout.block_q, layout.block_kv))
    if not torch.compiler.is_compiling() and (
        _layout_check_requested(check_layout)
        or (check_layout is None and name == "reference" and q.device.type == "cpu")
    ):
        _check_layout_values(layout)
    engine = _BACKENDS[name]
    if layout.is_variable and engine.run_variable is not None:
        return engine.run_variable(q, k, v, layout, scale, return_lse)
    if layout.q_perm is not None:
        q = _gather_tokens(q, layout.q_perm)
    if layout.kv_perm is not None:
        k = _gather_tokens(k, layout.kv_perm)
        v = _gather_tokens(v, layout.kv_perm)
    # No copies here: q, k, v are usually transposed views of Diffusers' (B, L, H, D) tensors; engines read strides.
    result = engine.run(q, k, v, layout, scale, return_lse)
    out, lse = result if return_lse else (result, None)
    if layout.q_perm is not None:
        out = _scatter_tokens(out, layout.q_perm)
        if lse is not None:
            lse = _scatter_tokens(lse, layout.q_perm)
    return (out, lse) if return_lse else out


__all__ = [
    "BACKENDS",
    "CHECK_LAYOUT_ENV",
    "available_backends",
    "block_sparse_attention",
    "register_backend",
    "resolve_backend",
]
