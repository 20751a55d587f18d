"""Flux (``FluxTransformer2DModel``): dual- and single-stream joint [text; image] attention.

q, k, v are built exactly as Diffusers' ``FluxAttnProcessor`` builds them (projections, fused or not, QK-norm per head,
``add_*_proj`` for the text stream of the dual-stream blocks, RoPE over the joint sequence). The text tokens come
FIRST: the core gets ``text_first=True`` and keeps text rows and columns dense. The image is a video of one frame whose
token grid the step hook reads from ``img_ids`` (Flux packs 2x2 latents: an H x W image is an (H/16, W/16) grid).
Single-stream blocks receive the concatenated sequence without ``encoder_hidden_states``; their text count comes from
``txt_ids`` through the geometry.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from diffusers.models.embeddings import apply_rotary_emb

from ..kernels import qk_norm_rope
from .base import SparseAttentionCore

MODEL = "flux"


def _qkv_projections(attn, hidden_states, encoder_hidden_states):
    # Diffusers' ``_get_qkv_projections`` (private), restated so that a rename there does not break us.
    encoder_query = encoder_key = encoder_value = None
    if attn.fused_projections:
        query, key, value = attn.to_qkv(hidden_states).chunk(3, dim=-1)
        if encoder_hidden_states is not None and hasattr(attn, "to_added_qkv"):
            encoder_query, encoder_key, encoder_value = attn.to_added_qkv(encoder_hidden_states).chunk(3, dim=-1)
    else:
        query = attn.to_q(hidden_states)
        key = attn.to_k(hidden_states)
        value = attn.to_v(hidden_states)
        if encoder_hidden_states is not None and attn.added_kv_proj_dim is not None:
            encoder_query = attn.add_q_proj(encoder_hidden_states)
            encoder_key = attn.add_k_proj(encoder_hidden_states)
            encoder_value = attn.add_v_proj(encoder_hidden_states)
    return query, key, value, encoder_query, encoder_key, encoder_value


class FluxSparseAttnProcessor:
    """Sparse joint-attention processor for Flux's dual- and single-stream blocks (``FluxAttention``)."""

    _attention_backend = None
    _parallel_config = None

    def __init__(self, core: SparseAttentionCore):
        self.core = core

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        image_rotary_emb: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
    ):
        query, key, value, encoder_query, encoder_key, encoder_value = _qkv_projections(
            attn, hidden_states, encoder_hidden_states
        )

        joint = attn.added_kv_proj_dim is not None and encoder_query is not None
        if joint:
            text_len = encoder_query.shape[1]
        elif encoder_hidden_states is None and self.core.state.geometry is not None:
            # Single-stream block: the sequence is [text; image] already; the step hook counted txt_ids.
            text_len = self.core.state.geometry.text_tokens
        else:
            text_len = 0
        image_len = query.shape[1] - (0 if joint else text_len)

        value = value.unflatten(-1, (-1, attn.head_dim))
        if joint:
            encoder_value = encoder_value.unflatten(-1, (-1, attn.head_dim))
            value = torch.cat([encoder_value, value], dim=1)
        if self._fused_prologue(attn, query, image_rotary_emb, joint, text_len, image_len):
            # QK-norm and RoPE in one pass per tensor, the text part and the image part written straight into the
            # joint sequence (`kernels.qk_norm_rope`), when our kernel runs the call.
            query = self._fused_qk(attn, query, encoder_query, "q", image_rotary_emb, joint)
            key = self._fused_qk(attn, key, encoder_key, "k", image_rotary_emb, joint)
        else:
            query = query.unflatten(-1, (-1, attn.head_dim))
            key = key.unflatten(-1, (-1, attn.head_dim))

            query = attn.norm_q(query)
            key = attn.norm_k(key)

            if joint:
                encoder_query = encoder_query.unflatten(-1, (-1, attn.head_dim))
                encoder_key = encoder_key.unflatten(-1, (-1, attn.head_dim))

                encoder_query = attn.norm_added_q(encoder_query)
                encoder_key = attn.norm_added_k(encoder_key)

                query = torch.cat([encoder_query, query], dim=1)
                key = torch.cat([encoder_key, key], dim=1)

            if image_rotary_emb is not None:
                query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
                key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)

        hidden_states = self.core(
            query, key, value, attn_mask=attention_mask, text_len=text_len, text_first=True,
            attention_backend=self._attention_backend, parallel_config=self._parallel_config,
        )
        hidden_states = hidden_states.flatten(2, 3)
        hidden_states = hidden_states.to(query.dtype)

        if encoder_hidden_states is not None:
            encoder_hidden_states, hidden_states = hidden_states.split_with_sizes(
                [encoder_hidden_states.shape[1], hidden_states.shape[1] - encoder_hidden_states.shape[1]], dim=1
            )
            hidden_states = attn.to_out[0](hidden_states.contiguous())
            hidden_states = attn.to_out[1](hidden_states)
            encoder_hidden_states = attn.to_add_out(encoder_hidden_states.contiguous())

            return hidden_states, encoder_hidden_states
        return hidden_states


    @staticmethod
    def _fused_qk(attn, x, text, which, image_rotary_emb, joint):
        """q or k of the joint [text; image] sequence with the fused kernel (every token rotated): single-stream
        blocks in one call; dual-stream blocks write the text part (its own projection and norm) and the image part
        into one buffer instead of concatenating."""
        norm = attn.norm_q if which == "q" else attn.norm_k
        cos, sin = image_rotary_emb
        if not joint:
            parts = [(x, norm.weight, norm.eps, cos, sin, x.shape[1])]
        else:
            text_norm = attn.norm_added_q if which == "q" else attn.norm_added_k
            n_text = text.shape[1]
            parts = [(text, text_norm.weight, text_norm.eps, cos[:n_text], sin[:n_text], n_text),
                     (x, norm.weight, norm.eps, cos[n_text:], sin[n_text:], x.shape[1])]
        return qk_norm_rope.joint_head_rms_norm_rope(parts, attn.heads, norm="torch")

    def _fused_prologue(self, attn, query, image_rotary_emb, joint, text_len, image_len) -> bool:
        """Whether this call builds q and k with the fused kernel: a call that runs our kernel (sparse, or a
        ``fast_dense`` dense step; dense calls through Diffusers' attention keep the stock arithmetic, bit for bit),
        ``torch.nn.RMSNorm`` per head (`qk_norm_rope.fusable`), and the rotary table over the whole joint sequence as
        FLUX passes it."""
        if not isinstance(image_rotary_emb, (tuple, list)) or len(image_rotary_emb) != 2:
            return False
        head_dim = attn.head_dim
        norms = [attn.norm_q, attn.norm_k] + ([attn.norm_added_q, attn.norm_added_k] if joint else [])
        if query.shape[-1] != attn.heads * head_dim \
                or not qk_norm_rope.fusable(query, head_dim, norms, torch.nn.RMSNorm, (head_dim,)):
            return False
        total = text_len + image_len
        if any(f.dim() != 2 or tuple(f.shape) != (total, head_dim) for f in image_rotary_emb):
            return False
        return self.core.runs_own_kernel(query.unflatten(-1, (attn.heads, head_dim)), image_len)

def reorder_tokens(transformer, arguments: dict, order: torch.Tensor) -> bool:
    """Puts the image tokens of a forward's ``arguments`` (bound by name) in ``order``: the packed latents and their
    position ids, from which the forward computes RoPE. Everything else in Flux outside attention works per token.
    False (nothing changed) where the forward would add per-token tensors in the original order: ControlNet
    residuals, or image tokens beyond the grid (Kontext's reference image)."""
    if arguments.get("controlnet_block_samples") is not None or (
        arguments.get("controlnet_single_block_samples") is not None
    ):
        return False
    hidden_states, img_ids = arguments.get("hidden_states"), arguments.get("img_ids")
    if img_ids is None or hidden_states.shape[1] != order.numel() or img_ids.shape[-2] != order.numel():
        return False
    arguments["hidden_states"] = hidden_states.index_select(1, order)
    arguments["img_ids"] = img_ids.index_select(img_ids.dim() - 2, order)
    return True


def patch_size(transformer) -> Tuple[int, int, int]:
    # Unused for the grid (the step hook reads img_ids); Flux's transformer itself patches 1x1 packed tokens.
    p = transformer.config.patch_size
    return (1, p, p)


def is_sparse_target(name: str, transformer) -> Optional[int]:
    """Layer index (dual-stream blocks first, then single-stream) for the joint attentions we sparsify."""
    parts = name.split(".")
    if len(parts) == 4 and parts[2] == "attn" and parts[-1] == "processor":
        if parts[0] == "transformer_blocks":
            return int(parts[1])
        if parts[0] == "single_transformer_blocks":
            return len(transformer.transformer_blocks) + int(parts[1])
    return None


def make_processor(core: SparseAttentionCore) -> FluxSparseAttnProcessor:
    return FluxSparseAttnProcessor(core)
