"""Exact block-sparse attention in plain PyTorch: the oracle every other backend is tested against.

Chunked over query blocks so that no L x L tensor exists for the whole sequence: a chunk of ``c`` query blocks gathers
its selected keys (``Kmax * block_kv`` tokens per block) and computes softmax in float32. Works for fixed and variable
blocks, on any device. A query block with no key blocks yields zeros and lse = -inf.

The chunk loop is Python over a size known only from the layout (its ``Kmax``, which a pattern planned inside a
compiled graph sizes from data). ``torch.compile`` therefore sees the engine as one custom op,
``dit_sparse::reference_block_sparse_fwd``, whose fake implementation gives the output shapes from q and v alone; eager
calls skip the op's dispatch.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from ..layout import BlockLayout

# Elements of the per-chunk score tensor; bounds the reference's peak memory (~256 MiB in fp32).
_CHUNK_ELEMENTS = 1 << 26


def block_starts(layout: BlockLayout, which: str, device) -> torch.Tensor:
    """Block boundaries [B or 1, H or 1, N + 1] for fixed or variable blocks."""
    if which == "q":
        starts, block, n, length = layout.q_block_starts, layout.block_q, layout.num_q_blocks, layout.seq_len_q
    else:
        starts, block, n, length = layout.kv_block_starts, layout.block_kv, layout.num_kv_blocks, layout.seq_len_kv
    if starts is not None:
        return starts.to(device=device, dtype=torch.long)
    return (torch.arange(n + 1, device=device, dtype=torch.long) * block).clamp(max=length).view(1, 1, n + 1)


def reference_block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layout: BlockLayout,
    scale: float,
    return_lse: bool = False,
):
    """Block-sparse attention on already-permuted q, k, v (B, H, L, D); see `dit_sparse.kernels`."""
    b, h, lq, d = q.shape
    lk = k.shape[2]
    dv = v.shape[-1]
    device = q.device
    bq, bk = layout.block_q, layout.block_kv
    nq = layout.num_q_blocks
    kmax = layout.kv_indices.shape[-1]

    q_starts = block_starts(layout, "q", device).expand(b, h, -1)
    kv_starts = block_starts(layout, "kv", device).expand(b, h, -1)
    kv_idx = layout.kv_indices.to(device=device, dtype=torch.long).expand(b, h, nq, kmax)
    kv_cnt = layout.kv_counts.to(device=device, dtype=torch.long).expand(b, h, nq)
    valid_len = None
    if layout.kv_valid_len is not None:
        valid_len = layout.kv_valid_len.to(device=device, dtype=torch.long).view(-1, 1, 1, 1, 1)

    out = torch.zeros(b, h, lq + 1, dv, device=device, dtype=torch.float32)  # +1: a dump row for padded queries
    lse_out = torch.full((b, h, lq + 1), float("-inf"), device=device, dtype=torch.float32)
    kf, vf = k.float(), v.float()

    chunk = max(1, _CHUNK_ELEMENTS // max(1, b * h * bq * kmax * bk))
    ar_q = torch.arange(bq, device=device)
    ar_k = torch.arange(bk, device=device)
    for c0 in range(0, nq, chunk):
        c1 = min(nq, c0 + chunk)
        # Query tokens of these blocks: [B, H, c, bq]
        qs = q_starts[..., c0:c1].unsqueeze(-1) + ar_q
        q_ok = qs < q_starts[..., c0 + 1 : c1 + 1].unsqueeze(-1)
        qs_safe = torch.where(q_ok, qs, torch.zeros_like(qs))
        qt = q.float().gather(2, qs_safe.flatten(2).unsqueeze(-1).expand(-1, -1, -1, d)).view(b, h, c1 - c0, bq, d)

        # Key tokens of the selected blocks: [B, H, c, kmax, bk]
        blk = kv_idx[:, :, c0:c1]
        ks = kv_starts.gather(2, blk.flatten(2)).view_as(blk).unsqueeze(-1) + ar_k
        ke = kv_starts.gather(2, (blk + 1).flatten(2)).view_as(blk).unsqueeze(-1)
        k_ok = (ks < ke) & (torch.arange(kmax, device=device).view(1, 1, 1, kmax, 1) < kv_cnt[:, :, c0:c1, None, None])
        k_ok &= ks < lk
        if valid_len is not None:
            k_ok &= ks < valid_len
        ks_safe = torch.where(k_ok, ks, torch.zeros_like(ks)).flatten(3)  # [B, H, c, kmax*bk]
        flat = ks_safe.flatten(2)
        kt = kf.gather(2, flat.unsqueeze(-1).expand(-1, -1, -1, d)).view(b, h, c1 - c0, kmax * bk, d)
        vt = vf.gather(2, flat.unsqueeze(-1).expand(-1, -1, -1, dv)).view(b, h, c1 - c0, kmax * bk, dv)

        s = torch.einsum("bhcqd,bhckd->bhcqk", qt, kt) * scale
        s = s.masked_fill(~k_ok.flatten(3).unsqueeze(3), float("-inf"))
        lse = torch.logsumexp(s, dim=-1)  # [B, H, c, bq]; -inf for rows with no keys
        p = torch.exp(s - torch.where(torch.isinf(lse), torch.zeros_like(lse), lse).unsqueeze(-1))
        o = torch.einsum("bhcqk,bhckd->bhcqd", p, vt)

        dst = torch.where(q_ok, qs, torch.full_like(qs, lq)).flatten(2)  # padded query slots go to the dump row
        out.scatter_(2, dst.unsqueeze(-1).expand(-1, -1, -1, dv), o.flatten(2, 3))
        lse_out.scatter_(2, dst, lse.flatten(2))

    out = out[:, :, :lq].to(q.dtype)
    if return_lse:
        return out, lse_out[:, :, :lq]
    return out


OP_NAME = "dit_sparse::reference_block_sparse_fwd"


@torch.library.custom_op(OP_NAME, mutates_args=())
def reference_block_sparse_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kv_indices: torch.Tensor,
    kv_counts: torch.Tensor,
    q_block_starts: Optional[torch.Tensor],
    kv_block_starts: Optional[torch.Tensor],
    kv_valid_len: Optional[torch.Tensor],
    block_q: int,
    block_kv: int,
    scale: float,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The reference engine as an opaque op for ``torch.compile``: ``(out, lse)`` on permuted (B, H, L, D) tensors."""
    layout = BlockLayout(kv_indices, kv_counts, block_q, block_kv, q.shape[2], k.shape[2],
                         q_block_starts=q_block_starts, kv_block_starts=kv_block_starts, kv_valid_len=kv_valid_len)
    out, lse = reference_block_sparse_attention(q, k, v, layout, scale, return_lse=True)
    # Contiguous, as the fake implementation promises (the eager function returns views of padded buffers).
    return out.contiguous(), lse.contiguous()


@reference_block_sparse_fwd.register_fake
def _reference_block_sparse_fwd_fake(
    q, k, v, kv_indices, kv_counts, q_block_starts, kv_block_starts, kv_valid_len, block_q, block_kv, scale
):
    b, h, lq, _ = q.shape
    return q.new_empty(b, h, lq, v.shape[-1]), q.new_empty(b, h, lq, dtype=torch.float32)


def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: BlockLayout, scale: float, return_lse: bool):
    """The engine behind ``backend="reference"``: the custom op under ``torch.compile``, the plain function else."""
    if not torch.compiler.is_compiling():
        return reference_block_sparse_attention(q, k, v, layout, scale, return_lse)
    out, lse = reference_block_sparse_fwd(
        q, k, v, layout.kv_indices, layout.kv_counts, layout.q_block_starts, layout.kv_block_starts,
        layout.kv_valid_len, layout.block_q, layout.block_kv, float(scale),
    )
    return (out, lse) if return_lse else out
