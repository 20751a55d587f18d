"""FlashAttention-4 (CuTe DSL) engine: its block sparsity consumes our index lists as they are.

Fixed layouts: every listed block is a "full" block (``full_block_cnt/idx``); the partially masked lists
(``mask_block_*``) are empty.

Variable layouts (semantic's cluster pieces, at most one tile each): every piece becomes a whole tile of a padded
sequence (`dit_sparse.layout.pad_to_tiles`), so FA4 runs the layout's own lists on whole tiles and computes exactly
its selection. The layout's permutation and the padding are one gather of q, k and v from the inputs' order, and
the output is read back by one gather. Key tiles that hold padding slots are FA4's "mask" blocks, where a
``mask_mod`` reads a per-slot validity (an aux tensor); the other listed tiles run unmasked.
FA4 wants q, k, v as (B, L, H, D): our (B, H, L, D) tensors built from Diffusers' (B, L, H, D) are transposed views of
exactly that memory, so the adapter passes views and copies nothing. Optional dependency: ``pip install
dit-sparse[fa4]`` (Hopper sm90 / Blackwell sm100).
"""

from __future__ import annotations

import os
from typing import List, Optional

import torch

from ..config import env_flag

# FlashAttention-4 compiles its kernels at the first call of every new process (+3.7 s on the first sparse step of
# Wan-14B 720p, issue #13); its own disk cache, read when flash_attn.cute is first imported, keeps them across
# processes. On unless the user chose otherwise (FLASH_ATTENTION_CUTE_DSL_CACHE_ENABLED) or set
# DIT_SPARSE_PERSISTENT_CACHE=0.
if env_flag("DIT_SPARSE_PERSISTENT_CACHE", True):
    os.environ.setdefault("FLASH_ATTENTION_CUTE_DSL_CACHE_ENABLED", "1")

try:
    import cutlass
    import cutlass.cute as cute
    from flash_attn.cute import utils as fa4_utils
    from flash_attn.cute.block_sparsity import BlockSparseTensorsTorch
    from flash_attn.cute.interface import flash_attn_func
except Exception as err:  # ImportError, or a CuTe DSL that fails to initialise without a GPU toolchain
    raise ImportError(f"flash-attn-4 is not usable here: {err}") from err

from ..layout import BlockLayout, PaddedTiles, pad_to_tiles


def available(device: torch.device, dtype: torch.dtype, head_dim: int, kind: str) -> Optional[str]:
    if device.type != "cuda" or not torch.cuda.is_available():
        return "FlashAttention-4 needs a CUDA device"
    major, _ = torch.cuda.get_device_capability(device)
    if major not in (9, 10):
        return f"FlashAttention-4 block sparsity needs sm90 or sm100, this GPU is sm{major}x"
    if dtype not in (torch.bfloat16, torch.float16):
        return f"dtype {dtype} is not supported by FlashAttention-4 (bf16 or fp16)"
    if head_dim not in (64, 128):
        return f"head_dim {head_dim} is not supported by the fa4 backend; use backend='triton' or 'flex'"
    if kind == "masked":
        return "fixed layouts with key padding (kv_valid_len) are not supported by the fa4 adapter"
    return None


def supports_blocks(device: torch.device, block_q: int, block_kv: int) -> Optional[str]:
    """FlashAttention-4's block sparsity on Hopper runs query blocks that are whole 64- or 128-row tiles and key
    blocks of one key tile (a multiple of 16 up to 128) or of whole 128-key tiles (``_fit_sm90_fwd_tile_to_block_
    sparsity`` and ``infer_block_sparse_expected_shapes`` in flash_attn.cute: a 32-token query block fails deep in
    its launch). Measured on the H200 at Wan-1.3B 480p, density 0.25: 128 / 64 blocks run at 594 effective TFLOP/s
    (128 / 128: 602), 128 / 32 at 437 (``2026-12-02_NVIDIA-H200_kernel-wan1.3b-kv{128,64,32}.json``). Blackwell
    (not measured here) is held to whole 128-token blocks."""
    major = torch.cuda.get_device_capability(device)[0] if device.type == "cuda" and torch.cuda.is_available() else 9
    q_ok = block_q % 64 == 0 if major == 9 else block_q % 128 == 0
    kv_ok = (block_kv % 16 == 0 and block_kv <= 128) or block_kv % 128 == 0 if major == 9 else block_kv % 128 == 0
    if q_ok and kv_ok:
        return None
    return (f"FlashAttention-4 block sparsity cannot run {block_q}-token query / {block_kv}-token key blocks on "
            f"sm{major}x (query blocks: multiples of 64 on Hopper; key blocks: multiples of 16 up to 128, or of 128)")


def _sparse_tensors(counts: torch.Tensor, indices: torch.Tensor, block_q: int, block_kv: int):
    empty_cnt = torch.zeros_like(counts)
    empty_idx = torch.zeros(*indices.shape[:3], 1, dtype=torch.int32, device=indices.device)
    return BlockSparseTensorsTorch(
        mask_block_cnt=empty_cnt, mask_block_idx=empty_idx, full_block_cnt=counts, full_block_idx=indices,
        block_size=(block_q, block_kv),
    )


def _fa4_forward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, counts: torch.Tensor, indices: torch.Tensor,
    block_q: int, block_kv: int, scale: float, sparse=None,
) -> List[torch.Tensor]:
    # (B, H, L, D) -> (B, L, H, D) views; FA4 reads strides, so no copy when the memory is already (B, L, H, D).
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if sparse is None:
        sparse = _sparse_tensors(counts, indices, block_q, block_kv)
    out, lse = flash_attn_func(qt, kt, vt, softmax_scale=scale, block_sparse_tensors=sparse, return_lse=True)
    return [out.transpose(1, 2), lse]


@torch.library.custom_op("dit_sparse::fa4_block_sparse_fwd", mutates_args=())
def fa4_block_sparse_fwd(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, counts: torch.Tensor, indices: torch.Tensor,
    block_q: int, block_kv: int, scale: float,
) -> List[torch.Tensor]:
    out, lse = _fa4_forward(q, k, v, counts, indices, block_q, block_kv, scale)
    return [out, lse.float()]


def _fake_outputs(q: torch.Tensor, v: torch.Tensor) -> List[torch.Tensor]:
    """What FA4 returns for q (B, H, L, D): out in (B, L, H, D) memory as its (B, H, L, D) view, and float32 lse."""
    b, h, lq, _ = q.shape
    dv = v.shape[-1]
    out = torch.empty_strided((b, h, lq, dv), (lq * h * dv, dv, h * dv, 1), dtype=q.dtype, device=q.device)
    return [out, q.new_empty((b, h, lq), dtype=torch.float32)]


@fa4_block_sparse_fwd.register_fake
def _(q, k, v, counts, indices, block_q, block_kv, scale):
    return _fake_outputs(q, v)


def run(q, k, v, layout: BlockLayout, scale: float, return_lse: bool):
    if torch.compiler.is_compiling():
        out, lse = fa4_block_sparse_fwd(
            q, k, v, layout.kv_counts, layout.kv_indices, layout.block_q, layout.block_kv, float(scale)
        )
    else:
        # Eager: skip the custom-op dispatch and reuse FA4's block tensors for a cached layout; both are host-side
        # costs that show at low density, where the kernel itself takes about a millisecond.
        sparse = layout.memo.get("fa4")
        if sparse is None:
            sparse = layout.memo["fa4"] = _sparse_tensors(
                layout.kv_counts, layout.kv_indices, layout.block_q, layout.block_kv
            )
        out, lse = _fa4_forward(q, k, v, layout.kv_counts, layout.kv_indices, layout.block_q, layout.block_kv,
                                float(scale), sparse)
    # Query blocks with no key blocks come back as zeros with lse = -inf (checked on the GPU by the kernel bench).
    return (out, lse) if return_lse else out


# ------------------------------------------------------------------ variable layouts on padded tiles
@cute.jit
def _key_ok_mask(batch, head, m_idx, n_idx, seqlen_info, aux_tensors):
    """FA4 mask_mod of the padded tiles: key slot ``n`` of (batch, head) is computed where ``key_ok`` holds 1."""
    key_ok = aux_tensors[0]
    ok = fa4_utils.scalar_to_ssa(key_ok[batch[0], head[0], n_idx[0]], cutlass.Int32)
    return ok > fa4_utils.scalar_to_ssa(0, cutlass.Int32)


def _padded_forward(qp, kp, vp, full_cnt, full_idx, part_cnt, part_idx, key_ok, tile_q, tile_kv, scale):
    sparse = BlockSparseTensorsTorch(mask_block_cnt=part_cnt, mask_block_idx=part_idx, full_block_cnt=full_cnt,
                                     full_block_idx=full_idx, block_size=(tile_q, tile_kv))
    out, lse = flash_attn_func(qp.transpose(1, 2), kp.transpose(1, 2), vp.transpose(1, 2), softmax_scale=scale,
                               mask_mod=_key_ok_mask, block_sparse_tensors=sparse, aux_tensors=[key_ok],
                               return_lse=True)
    return out.transpose(1, 2), lse


@torch.library.custom_op("dit_sparse::fa4_padded_tiles_fwd", mutates_args=())
def fa4_padded_tiles_fwd(
    qp: torch.Tensor, kp: torch.Tensor, vp: torch.Tensor, full_cnt: torch.Tensor, full_idx: torch.Tensor,
    part_cnt: torch.Tensor, part_idx: torch.Tensor, key_ok: torch.Tensor, tile_q: int, tile_kv: int, scale: float,
) -> List[torch.Tensor]:
    out, lse = _padded_forward(qp, kp, vp, full_cnt, full_idx, part_cnt, part_idx, key_ok, tile_q, tile_kv, scale)
    return [out, lse.float()]


@fa4_padded_tiles_fwd.register_fake
def _(qp, kp, vp, full_cnt, full_idx, part_cnt, part_idx, key_ok, tile_q, tile_kv, scale):
    return _fake_outputs(qp, vp)


def _slots_gather(x: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    return x.gather(2, src.unsqueeze(-1).expand(-1, -1, -1, x.shape[-1]))


def run_variable(q, k, v, layout: BlockLayout, scale: float, return_lse: bool):
    """A variable layout on padded tiles, from q, k, v in the inputs' own token order (the layout's permutation is
    folded into the padding gather; the front door does not permute for this engine)."""
    b, h = q.shape[:2]
    key = ("fa4_tiles", b, h)
    tiles: PaddedTiles = layout.memo.get(key)
    if tiles is None:
        tiles = pad_to_tiles(layout, b, h)
        if not torch.compiler.is_compiling():  # the memo is not written inside a graph (see the processors)
            layout.memo[key] = tiles
    qp, kp, vp = _slots_gather(q, tiles.q_src), _slots_gather(k, tiles.kv_src), _slots_gather(v, tiles.kv_src)
    args = (qp, kp, vp, tiles.full_counts, tiles.full_indices, tiles.partial_counts, tiles.partial_indices,
            tiles.key_ok, tiles.tile_q, tiles.tile_kv, float(scale))
    if torch.compiler.is_compiling():
        out_p, lse_p = fa4_padded_tiles_fwd(*args)
    else:
        out_p, lse_p = _padded_forward(*args)
    # Rows back to the inputs' order, gathered in FA4's (B, L, H, D) memory so that the result has that layout too,
    # as the processors hand it on (a (B, H, L, D) view of it).
    dv = out_p.shape[-1]
    index = tiles.q_slot.transpose(1, 2).unsqueeze(-1).expand(-1, -1, -1, dv)
    out = out_p.transpose(1, 2).gather(1, index).transpose(1, 2)
    if not return_lse:
        return out
    return out, lse_p.float().gather(2, tiles.q_slot)


def auto_skip(kind: str, blocks) -> bool:
    """Variable layouts of query pieces shorter than 128 tokens go to our Triton kernel under ``backend="auto"``:
    FA4's 64-row query tiles run at ~435 effective TFLOP/s against ~640 for 128-row ones (random layouts, Wan-14B
    720p, ``2026-12-03_NVIDIA-H200_kernel-semantic-fill.json``), and semantic's 64-token pieces on padded tiles were
    no faster than Triton reading them in place (one Wan-14B 720p step 4.42 s vs 4.30 s,
    ``...step-wan14b-720p-semantic-fa4.json``). 128-token query pieces (``block_size=128, kv_block_size=64``) run
    FA4's full-rate tiles: one HunyuanVideo 720p step 2.64x dense against 2.35x for 64-token pieces on Triton
    (``...step-hunyuan-720p-semantic-b128k64.json``)."""
    return kind == "variable" and blocks is not None and blocks[0] % 128 != 0


def _register():
    from . import register_backend

    register_backend("fa4", available, run, supports_blocks, run_variable=run_variable, auto_skip=auto_skip)


_register()
