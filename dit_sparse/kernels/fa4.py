"""FlashAttention-4 (CuTe DSL) engine: its block sparsity consumes our index lists as they are.

Every listed block is a "full" block (``full_block_cnt/idx``); the partially masked lists (``mask_block_*``) are empty.
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
    from flash_attn.cute.block_sparsity import BlockSparseTensorsTorch
    from flash_attn.cute.interface import flash_attn_func
except Exception as err:  # ImportError, or a CuTe DSL that fails to initialise without a GPU toolchain
    raise ImportError(f"flash-attn-4 is not usable here: {err}") from err

from ..layout import BlockLayout


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
    if kind != "fixed":
        return f"{kind} layouts (variable blocks or key padding) are not supported by the fa4 adapter"
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


@fa4_block_sparse_fwd.register_fake
def _(q, k, v, counts, indices, block_q, block_kv, scale):
    b, h, lq, _ = q.shape
    dv = v.shape[-1]
    # FA4 writes (B, L, H, D) memory; the op returns its (B, H, L, D) view.
    out = torch.empty_strided((b, h, lq, dv), (lq * h * dv, dv, h * dv, 1), dtype=q.dtype, device=q.device)
    return [out, q.new_empty((b, h, lq), dtype=torch.float32)]


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


def _register():
    from . import register_backend

    register_backend("fa4", available, run, supports_blocks)


_register()
