"""Wan 2.1 / 2.2 (``WanTransformer3DModel``): self-attention (``attn1``) goes through the sparse core.

q, k, v are built exactly as Diffusers' ``WanAttnProcessor`` builds them (projections, fused or not, QK-norm across
heads, interleaved RoPE). Cross-attention (``attn2``, with the I2V image branch) keeps the stock processor.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from diffusers.models.transformers.transformer_wan import WanAttnProcessor

from ..kernels import qk_norm_rope
from .base import SparseAttentionCore

MODEL = "wan"


def _apply_rotary_emb(hidden_states: torch.Tensor, freqs_cos: torch.Tensor, freqs_sin: torch.Tensor) -> torch.Tensor:
    # Same arithmetic as the stock processor so the dense config reproduces it bit for bit.
    x1, x2 = hidden_states.unflatten(-1, (-1, 2)).unbind(-1)
    cos = freqs_cos[..., 0::2]
    sin = freqs_sin[..., 1::2]
    out = torch.empty_like(hidden_states)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out.type_as(hidden_states)


class WanSparseAttnProcessor:
    """Sparse self-attention processor for ``WanAttention`` (``attn1``)."""

    _attention_backend = None
    _parallel_config = None

    def __init__(self, core: SparseAttentionCore):
        self.core = core
        self._stock = WanAttnProcessor()

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        rotary_emb: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
    ) -> torch.Tensor:
        if encoder_hidden_states is not None:
            # Cross-attention is never sparsified: defer to the stock processor with our backend settings.
            self._stock._attention_backend = self._attention_backend
            self._stock._parallel_config = self._parallel_config
            return self._stock(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)

        if attn.fused_projections:
            query, key, value = attn.to_qkv(hidden_states).chunk(3, dim=-1)
        else:
            query = attn.to_q(hidden_states)
            key = attn.to_k(hidden_states)
            value = attn.to_v(hidden_states)

        if self._fused_prologue(attn, query, rotary_emb):
            # QK-norm and RoPE in one pass per tensor when our kernel runs the call (`kernels.qk_norm_rope`).
            query = qk_norm_rope.rms_norm_rope(query, attn.norm_q.weight, attn.norm_q.eps, *rotary_emb, attn.heads)
            key = qk_norm_rope.rms_norm_rope(key, attn.norm_k.weight, attn.norm_k.eps, *rotary_emb, attn.heads)
            value = value.unflatten(2, (attn.heads, -1))
        else:
            query = attn.norm_q(query)
            key = attn.norm_k(key)

            query = query.unflatten(2, (attn.heads, -1))
            key = key.unflatten(2, (attn.heads, -1))
            value = value.unflatten(2, (attn.heads, -1))

            if rotary_emb is not None:
                query = _apply_rotary_emb(query, *rotary_emb)
                key = _apply_rotary_emb(key, *rotary_emb)

        hidden_states = self.core(
            query, key, value, attn_mask=attention_mask,
            attention_backend=self._attention_backend, parallel_config=self._parallel_config,
        )
        hidden_states = hidden_states.flatten(2, 3)
        hidden_states = hidden_states.type_as(query)

        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        return hidden_states

    def _fused_prologue(self, attn, query: torch.Tensor, rotary_emb) -> bool:
        """Whether this call builds q and k with the fused kernel: a call that runs our kernel, sparse or a
        ``fast_dense`` dense step (dense calls through Diffusers' attention keep the stock arithmetic and reproduce
        Diffusers bit for bit), ``torch.nn.RMSNorm`` across all heads as Wan's, and `qk_norm_rope.fusable`."""
        if rotary_emb is None:
            return False
        head_dim = query.shape[-1] // attn.heads
        if not qk_norm_rope.fusable(query, head_dim, (attn.norm_q, attn.norm_k), torch.nn.RMSNorm, (query.shape[-1],)):
            return False
        return self.core.runs_own_kernel(query.unflatten(2, (attn.heads, -1)))

def patch_size(transformer) -> Tuple[int, int, int]:
    return tuple(transformer.config.patch_size)


def is_sparse_target(name: str, transformer=None) -> Optional[int]:
    """Block index when ``name`` (from ``attn_processors``) is a self-attention we sparsify, else None."""
    parts = name.split(".")
    if len(parts) >= 4 and parts[0] == "blocks" and parts[2] == "attn1" and parts[-1] == "processor":
        return int(parts[1])
    return None


def make_processor(core: SparseAttentionCore) -> WanSparseAttnProcessor:
    return WanSparseAttnProcessor(core)
