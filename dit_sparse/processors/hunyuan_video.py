"""HunyuanVideo (``HunyuanVideoTransformer3DModel``): dual- and single-stream joint [video; text] attention.

q, k, v are built exactly as Diffusers' ``HunyuanVideoAttnProcessor2_0`` builds them. The sparse core sees the joint
sequence with the text tokens last; text rows and columns stay dense and the padding mask (``attention_mask`` [B, 1, 1,
L], derived from ``encoder_attention_mask``) is respected. The ``context_embedder.token_refiner`` attention is left
untouched.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.normalization import RMSNorm

from ..kernels import qk_norm_rope
from .base import SparseAttentionCore

MODEL = "hunyuan_video"


class HunyuanVideoSparseAttnProcessor:
    """Sparse joint-attention processor for HunyuanVideo's dual- and single-stream blocks."""

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
        image_rotary_emb: Optional[torch.Tensor] = None,
    ):
        single_stream = attn.add_q_proj is None
        if single_stream and encoder_hidden_states is not None:
            hidden_states = torch.cat([hidden_states, encoder_hidden_states], dim=1)

        query = attn.to_q(hidden_states)
        key = attn.to_k(hidden_states)
        value = attn.to_v(hidden_states)
        value = value.unflatten(2, (attn.heads, -1))

        text_len = encoder_hidden_states.shape[1] if encoder_hidden_states is not None else 0
        video_len = query.shape[1] - (text_len if single_stream else 0)
        if self._fused_prologue(attn, query, image_rotary_emb, video_len, text_len, single_stream):
            # QK-norm and RoPE in one pass per tensor, written straight into the joint sequence
            # (`kernels.qk_norm_rope`), when our kernel runs the call.
            query = self._fused_qk(attn, query, "q", encoder_hidden_states, image_rotary_emb, video_len, single_stream)
            key = self._fused_qk(attn, key, "k", encoder_hidden_states, image_rotary_emb, video_len, single_stream)
            if not single_stream and encoder_hidden_states is not None:
                encoder_value = attn.add_v_proj(encoder_hidden_states).unflatten(2, (attn.heads, -1))
                value = torch.cat([value, encoder_value], dim=1)
        else:
            query, key, value = self._stock_qkv(attn, query, key, value, encoder_hidden_states, image_rotary_emb,
                                                single_stream)

        hidden_states = self.core(
            query, key, value, attn_mask=attention_mask, text_len=text_len,
            attention_backend=self._attention_backend, parallel_config=self._parallel_config,
        )
        hidden_states = hidden_states.flatten(2, 3)
        hidden_states = hidden_states.to(query.dtype)

        if encoder_hidden_states is not None:
            hidden_states, encoder_hidden_states = (
                hidden_states[:, : -encoder_hidden_states.shape[1]],
                hidden_states[:, -encoder_hidden_states.shape[1] :],
            )
            if getattr(attn, "to_out", None) is not None:
                hidden_states = attn.to_out[0](hidden_states)
                hidden_states = attn.to_out[1](hidden_states)
            if getattr(attn, "to_add_out", None) is not None:
                encoder_hidden_states = attn.to_add_out(encoder_hidden_states)

        return hidden_states, encoder_hidden_states


    @staticmethod
    def _stock_qkv(attn, query, key, value, encoder_hidden_states, image_rotary_emb, single_stream):
        """q, k, v of the joint sequence exactly as Diffusers' ``HunyuanVideoAttnProcessor2_0`` builds them."""
        query = query.unflatten(2, (attn.heads, -1))
        key = key.unflatten(2, (attn.heads, -1))

        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        if image_rotary_emb is not None:
            if single_stream and encoder_hidden_states is not None:
                n_text = encoder_hidden_states.shape[1]
                query = torch.cat(
                    [apply_rotary_emb(query[:, :-n_text], image_rotary_emb, sequence_dim=1), query[:, -n_text:]], dim=1
                )
                key = torch.cat(
                    [apply_rotary_emb(key[:, :-n_text], image_rotary_emb, sequence_dim=1), key[:, -n_text:]], dim=1
                )
            else:
                query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
                key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)

        if not single_stream and encoder_hidden_states is not None:
            encoder_query = attn.add_q_proj(encoder_hidden_states).unflatten(2, (attn.heads, -1))
            encoder_key = attn.add_k_proj(encoder_hidden_states).unflatten(2, (attn.heads, -1))
            encoder_value = attn.add_v_proj(encoder_hidden_states).unflatten(2, (attn.heads, -1))
            if attn.norm_added_q is not None:
                encoder_query = attn.norm_added_q(encoder_query)
            if attn.norm_added_k is not None:
                encoder_key = attn.norm_added_k(encoder_key)
            query = torch.cat([query, encoder_query], dim=1)
            key = torch.cat([key, encoder_key], dim=1)
            value = torch.cat([value, encoder_value], dim=1)
        return query, key, value

    @staticmethod
    def _fused_qk(attn, x, which, encoder_hidden_states, image_rotary_emb, video_len, single_stream):
        """q or k of the joint sequence with the fused kernel: single-stream blocks normalise every token and rotate
        the video ones; dual-stream blocks write the video part and the text part (its own projection and norm) into
        one buffer instead of concatenating."""
        norm = attn.norm_q if which == "q" else attn.norm_k
        parts = [(x, norm.weight, norm.eps, *image_rotary_emb, video_len)]
        if not single_stream and encoder_hidden_states is not None:
            text = (attn.add_q_proj if which == "q" else attn.add_k_proj)(encoder_hidden_states)
            text_norm = attn.norm_added_q if which == "q" else attn.norm_added_k
            parts.append((text, text_norm.weight, text_norm.eps, *image_rotary_emb, 0))
        return qk_norm_rope.joint_head_rms_norm_rope(parts, attn.heads)

    def _fused_prologue(self, attn, query, image_rotary_emb, video_len, text_len, single_stream) -> bool:
        """Whether this call builds q and k with the fused kernel: a call that runs our kernel, sparse or a
        ``fast_dense`` dense step (dense calls through Diffusers' attention keep the stock arithmetic, bit for bit),
        Diffusers' RMSNorm per head (`qk_norm_rope.fusable`), and the rotary table as HunyuanVideo passes it."""
        if not isinstance(image_rotary_emb, (tuple, list)) or len(image_rotary_emb) != 2:
            return False
        head_dim = query.shape[-1] // attn.heads
        norms = [attn.norm_q, attn.norm_k]
        if not single_stream and text_len:
            norms += [attn.norm_added_q, attn.norm_added_k]
        if not qk_norm_rope.fusable(query, head_dim, norms, RMSNorm, (head_dim,)):
            return False
        if any(f.dim() != 2 or tuple(f.shape) != (video_len, head_dim) for f in image_rotary_emb):
            return False
        return self.core.runs_own_kernel(query.unflatten(2, (attn.heads, -1)), video_len)

def context_parallel_plan() -> dict:
    """A Ulysses context-parallel plan for ``HunyuanVideoTransformer3DModel`` (Diffusers ships none).

    Video tokens are split over ranks after patch embedding (and the RoPE tables with them); text tokens stay whole
    on every rank, and our processors exchange video shards for head shards inside attention. Use with
    ``transformer.enable_parallelism(config=ContextParallelConfig(ulysses_degree=N), cp_plan=context_parallel_plan())``
    after ``apply_sparse_attention`` (dense configs included: the stock processor cannot handle this plan).
    """
    from diffusers.models._modeling_parallel import ContextParallelInput, ContextParallelOutput

    return {
        "rope": {
            0: ContextParallelInput(split_dim=0, expected_dims=2, split_output=True),
            1: ContextParallelInput(split_dim=0, expected_dims=2, split_output=True),
        },
        "transformer_blocks.0": {
            "hidden_states": ContextParallelInput(split_dim=1, expected_dims=3, split_output=False),
        },
        "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
    }


def patch_size(transformer) -> Tuple[int, int, int]:
    cfg = transformer.config
    return (cfg.patch_size_t, cfg.patch_size, cfg.patch_size)


def is_sparse_target(name: str, transformer) -> Optional[int]:
    """Layer index (dual-stream blocks first, then single-stream) for the joint attentions we sparsify."""
    parts = name.split(".")
    if len(parts) == 4 and parts[2] == "attn" and parts[-1] == "processor":
        if parts[0] == "transformer_blocks":
            return int(parts[1])
        if parts[0] == "single_transformer_blocks":
            return len(transformer.transformer_blocks) + int(parts[1])
    return None


def make_processor(core: SparseAttentionCore) -> HunyuanVideoSparseAttnProcessor:
    return HunyuanVideoSparseAttnProcessor(core)
