"""Qwen-Image (``QwenImageTransformer2DModel``): dual-stream joint [text; image] attention.

q, k, v are built exactly as Diffusers' ``QwenDoubleStreamAttnProcessor2_0`` builds them (separate image and text
projections, QK-norm per head and stream, RoPE per stream with ``apply_rotary_emb_qwen``), and so is the key mask from
``encoder_hidden_states_mask``. The text tokens come FIRST: the core gets ``text_first=True`` and keeps text rows and
columns dense. The image is a video of one frame whose token grid the step hook reads from ``img_shapes`` (Qwen-Image
packs 2x2 latents: an H x W image is a (1, H/16, W/16) grid).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from diffusers.models.normalization import RMSNorm
from diffusers.models.transformers.transformer_qwenimage import apply_rotary_emb_qwen

from ..kernels import qk_norm_rope
from .base import SparseAttentionCore

MODEL = "qwen_image"


class QwenImageSparseAttnProcessor:
    """Sparse joint-attention processor for Qwen-Image's dual-stream blocks (``Attention``)."""

    _attention_backend = None
    _parallel_config = None

    def __init__(self, core: SparseAttentionCore):
        self.core = core

    def __call__(
        self,
        attn,
        hidden_states: torch.FloatTensor,  # image stream
        encoder_hidden_states: torch.FloatTensor = None,  # text stream
        encoder_hidden_states_mask: torch.FloatTensor = None,
        attention_mask: Optional[torch.FloatTensor] = None,
        image_rotary_emb: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
    ) -> Tuple[torch.FloatTensor, torch.FloatTensor]:
        if encoder_hidden_states is None:
            raise ValueError("QwenImageSparseAttnProcessor requires encoder_hidden_states (text stream)")
        if attention_mask is not None:
            raise ValueError(
                "QwenImageSparseAttnProcessor does not accept an external attention_mask. "
                "Pass encoder_hidden_states_mask to let the processor build the joint mask."
            )

        if encoder_hidden_states_mask is not None:
            seq_img = hidden_states.shape[1]
            image_mask = torch.ones((hidden_states.shape[0], seq_img), dtype=torch.bool, device=hidden_states.device)
            attention_mask = torch.cat([encoder_hidden_states_mask, image_mask], dim=1)
            attention_mask = attention_mask[:, None, None, :]

        seq_txt = encoder_hidden_states.shape[1]

        img_query = attn.to_q(hidden_states)
        img_key = attn.to_k(hidden_states)
        img_value = attn.to_v(hidden_states)

        txt_query = attn.add_q_proj(encoder_hidden_states)
        txt_key = attn.add_k_proj(encoder_hidden_states)
        txt_value = attn.add_v_proj(encoder_hidden_states)

        # A fixed head_dim, the head count from the projection (tensor parallelism shards the heads), as stock.
        head_dim = attn.inner_dim // attn.heads
        img_value = img_value.unflatten(-1, (-1, head_dim))
        txt_value = txt_value.unflatten(-1, (-1, head_dim))
        # [text, image], as stock.
        joint_value = torch.cat([txt_value, img_value], dim=1)

        img_freqs = txt_freqs = None
        if image_rotary_emb is not None:
            img_freqs, txt_freqs = image_rotary_emb
            order = self.core.state.token_order
            if order is not None:
                # The step hook put the image tokens in the pattern's order (`reorder_tokens`); Qwen-Image computes
                # RoPE from img_shapes inside its forward, so the image frequencies follow here (33 MB per call at
                # 4096^2, against 1.6 GB of q, k, v and output the kernel no longer permutes).
                img_freqs = img_freqs.index_select(0, order)

        if self._fused_prologue(attn, img_query, txt_query, img_freqs, txt_freqs, head_dim):
            # QK-norm and RoPE in one pass per tensor and stream, written straight into the joint [text; image]
            # sequence (`kernels.qk_norm_rope`), when our kernel runs the call.
            joint_query = self._fused_qk(attn.norm_added_q, attn.norm_q, txt_query, img_query, txt_freqs, img_freqs,
                                         head_dim)
            joint_key = self._fused_qk(attn.norm_added_k, attn.norm_k, txt_key, img_key, txt_freqs, img_freqs,
                                       head_dim)
        else:
            img_query = img_query.unflatten(-1, (-1, head_dim))
            img_key = img_key.unflatten(-1, (-1, head_dim))
            txt_query = txt_query.unflatten(-1, (-1, head_dim))
            txt_key = txt_key.unflatten(-1, (-1, head_dim))

            if attn.norm_q is not None:
                img_query = attn.norm_q(img_query)
            if attn.norm_k is not None:
                img_key = attn.norm_k(img_key)
            if attn.norm_added_q is not None:
                txt_query = attn.norm_added_q(txt_query)
            if attn.norm_added_k is not None:
                txt_key = attn.norm_added_k(txt_key)

            if image_rotary_emb is not None:
                img_query = apply_rotary_emb_qwen(img_query, img_freqs, use_real=False)
                img_key = apply_rotary_emb_qwen(img_key, img_freqs, use_real=False)
                txt_query = apply_rotary_emb_qwen(txt_query, txt_freqs, use_real=False)
                txt_key = apply_rotary_emb_qwen(txt_key, txt_freqs, use_real=False)

            joint_query = torch.cat([txt_query, img_query], dim=1)
            joint_key = torch.cat([txt_key, img_key], dim=1)

        joint_hidden_states = self.core(
            joint_query, joint_key, joint_value, attn_mask=attention_mask, text_len=seq_txt, text_first=True,
            attention_backend=self._attention_backend, parallel_config=self._parallel_config,
        )

        joint_hidden_states = joint_hidden_states.flatten(2, 3)
        joint_hidden_states = joint_hidden_states.to(joint_query.dtype)

        txt_attn_output = joint_hidden_states[:, :seq_txt, :]
        img_attn_output = joint_hidden_states[:, seq_txt:, :]

        img_attn_output = attn.to_out[0](img_attn_output.contiguous())
        if len(attn.to_out) > 1:
            img_attn_output = attn.to_out[1](img_attn_output)  # dropout

        txt_attn_output = attn.to_add_out(txt_attn_output.contiguous())

        return img_attn_output, txt_attn_output


    @staticmethod
    def _fused_qk(txt_norm, img_norm, txt, img, txt_freqs, img_freqs, head_dim):
        """q or k of the joint [text; image] sequence with the fused kernel: each stream's projection normed (its
        own norm) and rotated (its own complex frequencies, read as interleaved (cos, sin) pairs) into one buffer."""
        parts = []
        for x, norm, freqs in ((txt, txt_norm, txt_freqs), (img, img_norm, img_freqs)):
            # A complex table viewed as reals is (cos_0, sin_0, cos_1, sin_1, ...): the kernel takes its cosines from
            # the even channels of one table and its sines from the odd channels of the other, so both are this one.
            pairs = torch.view_as_real(freqs).flatten(-2)
            parts.append((x, norm.weight, norm.eps, pairs, pairs, x.shape[1]))
        return qk_norm_rope.joint_head_rms_norm_rope(parts, txt.shape[-1] // head_dim)

    def _fused_prologue(self, attn, img_query, txt_query, img_freqs, txt_freqs, head_dim) -> bool:
        """Whether this call builds q and k with the fused kernel: a call that runs our kernel (sparse, or a
        ``fast_dense`` dense step; dense calls through Diffusers' attention keep the stock arithmetic, bit for bit),
        Diffusers' RMSNorm per head on both streams (`qk_norm_rope.fusable`), and complex rotary tables as Qwen-Image
        passes them."""
        if img_freqs is None or not (img_freqs.is_complex() and txt_freqs.is_complex()):
            return False
        if torch.is_grad_enabled() and txt_query.requires_grad:
            return False
        norms = (attn.norm_q, attn.norm_k, attn.norm_added_q, attn.norm_added_k)
        if not qk_norm_rope.fusable(img_query, head_dim, norms, RMSNorm, (head_dim,)):
            return False
        if tuple(img_freqs.shape) != (img_query.shape[1], head_dim // 2) \
                or tuple(txt_freqs.shape) != (txt_query.shape[1], head_dim // 2):
            return False
        return self.core.runs_own_kernel(img_query.unflatten(-1, (-1, head_dim)), img_query.shape[1])

def reorder_tokens(transformer, arguments: dict, order: torch.Tensor) -> bool:
    """Puts the image tokens of a forward's ``arguments`` (bound by name) in ``order`` (the processors permute the
    image RoPE frequencies to match). False (nothing changed) where the forward adds per-token tensors in the original
    order: ControlNet residuals, per-token modulation (``zero_cond_t``), or image tokens beyond the grid (edit
    conditions)."""
    hidden_states = arguments.get("hidden_states")
    if (arguments.get("controlnet_block_samples") is not None or getattr(transformer, "zero_cond_t", False)
            or hidden_states.shape[1] != order.numel()):
        return False
    arguments["hidden_states"] = hidden_states.index_select(1, order)
    return True


def patch_size(transformer) -> Tuple[int, int, int]:
    # Unused for the grid (the step hook reads img_shapes); the transformer itself takes 2x2-packed tokens.
    p = transformer.config.patch_size
    return (1, p, p)


def is_sparse_target(name: str, transformer=None) -> Optional[int]:
    """Layer index of the dual-stream blocks' joint attentions (``transformer_blocks.{i}.attn.processor``)."""
    parts = name.split(".")
    if len(parts) == 4 and parts[0] == "transformer_blocks" and parts[2] == "attn" and parts[-1] == "processor":
        return int(parts[1])
    return None


def make_processor(core: SparseAttentionCore) -> QwenImageSparseAttnProcessor:
    return QwenImageSparseAttnProcessor(core)
