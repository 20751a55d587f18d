"""FlexAttention engine: a ``BlockMask`` built straight from the layout's index lists (no L x L mask).

Every listed block is a "full" block (no per-token mask function), except when keys are masked by ``kv_valid_len``:
then the listed blocks become partial blocks with a ``mask_mod`` that hides the padded keys. ``flex_attention`` is
compiled once per process (torch.compile caches a graph per input shape).
"""

from __future__ import annotations

from typing import Optional

import torch

try:
    from torch.nn.attention.flex_attention import BlockMask, flex_attention
except ImportError as err:  # torch < 2.5
    raise ImportError("FlexAttention needs torch >= 2.5") from err

from ..layout import BlockLayout

_COMPILED = None


def _compiled_flex():
    global _COMPILED
    if _COMPILED is None:
        _COMPILED = torch.compile(flex_attention, dynamic=False)
    return _COMPILED


def layout_to_block_mask(layout: BlockLayout, batch: int, heads: int) -> BlockMask:
    """The FlexAttention ``BlockMask`` equal to ``layout`` (fixed-size blocks, equal query and key block sizes)."""
    nq, nk = layout.num_q_blocks, layout.num_kv_blocks
    b = layout.kv_indices.shape[0] if layout.kv_indices.shape[0] == batch else 1
    h = layout.kv_indices.shape[1] if layout.kv_indices.shape[1] == heads else 1
    counts = layout.kv_counts.expand(b, h, nq).contiguous()
    idx = layout.kv_indices.expand(b, h, nq, -1)
    if idx.shape[-1] < nk:
        # BlockMask expects one index slot per key block; entries past the count are never read.
        idx = torch.nn.functional.pad(idx, (0, nk - idx.shape[-1]))
    idx = idx.contiguous()
    block = (layout.block_q, layout.block_kv)
    seq = (layout.seq_len_q, layout.seq_len_kv)
    # The block-level mask (blocks, not tokens: Nq x Nk) as a mask_mod: the compiled kernel skips it on full blocks,
    # and FlexAttention's eager fallback, which only honours mask_mod, then still computes the right thing.
    dense_blocks = layout.to_block_mask().expand(b, h, nq, nk)
    bq, bk = layout.block_q, layout.block_kv
    b_sel = (lambda x: x) if b > 1 else (lambda x: x * 0)
    h_sel = (lambda x: x) if h > 1 else (lambda x: x * 0)
    if layout.kv_valid_len is None:

        def in_layout(b_, h_, q_idx, kv_idx):
            return dense_blocks[b_sel(b_), h_sel(h_), q_idx // bq, kv_idx // bk]

        return BlockMask.from_kv_blocks(
            torch.zeros_like(counts), torch.zeros_like(idx), counts, idx, BLOCK_SIZE=block, mask_mod=in_layout,
            seq_lengths=seq, compute_q_blocks=False,
        )
    valid = layout.kv_valid_len.to(torch.int32)

    def in_layout_and_valid(b_, h_, q_idx, kv_idx):
        return dense_blocks[b_sel(b_), h_sel(h_), q_idx // bq, kv_idx // bk] & (kv_idx < valid[b_])

    return BlockMask.from_kv_blocks(
        counts, idx, None, None, BLOCK_SIZE=block, mask_mod=in_layout_and_valid, seq_lengths=seq,
        compute_q_blocks=False,
    )


def available(device: torch.device, dtype: torch.dtype, head_dim: int, kind: str) -> Optional[str]:
    if device.type != "cuda":
        return "FlexAttention's fast path needs a CUDA device"
    if kind == "variable":
        return "variable-size blocks are not expressible as a FlexAttention BlockMask; use backend='triton'"
    if head_dim not in (64, 128):
        return f"head_dim {head_dim} is not supported here (64 or 128)"
    return None


def run(q, k, v, layout: BlockLayout, scale: float, return_lse: bool):
    if layout.block_q != layout.block_kv:
        raise ValueError("the flex backend needs block_q == block_kv")
    mask = layout_to_block_mask(layout, q.shape[0], q.shape[1])
    options = None
    if layout.block_q < 128:
        # FlexAttention's default 128-token tiles must divide the block; smaller blocks need matching tiles.
        options = {"BLOCK_M": layout.block_q, "BLOCK_N": layout.block_kv}
    out, lse = _compiled_flex()(q, k, v, block_mask=mask, scale=scale, return_lse=True, kernel_options=options)
    # Rows with no keys: FlexAttention leaves zeros in out and -inf in lse, as our contract wants.
    return (out, lse.float()) if return_lse else out


def _register():
    from . import register_backend

    register_backend("flex", available, run)


_register()
