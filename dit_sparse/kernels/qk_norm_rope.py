"""The query/key prologue in one pass: RMS norm, then the interleaved rotary embedding (every model we support).

Diffusers' ``WanAttnProcessor`` normalises q and k over all heads (``torch.nn.RMSNorm`` of ``heads * head_dim``) and
then rotates pairs of channels with some eight elementwise kernels per tensor (strided views, fp32 products, two
strided copies back). Once attention is sparse those passes are a visible part of a step: on an H200 they took
1.4-2.1 ms for q and k per call at Wan-1.3B 480p (this kernel: 0.22 ms) and 10-15 ms at Wan-14B 720p (1.1 ms),
``python -m dit_sparse.eval.bench prologue`` (``2026-12-02_NVIDIA-H200_prologue.json``); a sparse step at density 0.35
went from 0.729 s to 0.671 s at Wan-1.3B 480p. Here one program reads a token's row once, contiguously, and writes it
once. (A first version loaded the even and odd channels with two strided loads and ran ~10x off the memory bound:
``...prologue-strided-loads.json``.)

The arithmetic is the stock one: the norm in fp32 (``x * rsqrt(mean(x^2) + eps) * weight``, rounded once to the
input dtype, as torch's RMSNorm does), then each pair rotated in fp32 from those rounded values and rounded again.
Only the order of the sum of squares (and any fused multiply-add the compiler forms) differs, so results agree with
the stock path to the input dtype's last bit on most elements, not bit for bit (bf16 at Wan's shapes: 99.998 % of the
elements identical with fp32 frequencies). That is why the processors run it only on calls our kernels run (sparse
ones, and ``fast_dense`` steps on FlashAttention-4), whose output is not Diffusers' bits anyway; dense calls through
Diffusers' attention keep the stock arithmetic and reproduce it exactly.

HunyuanVideo (`head_rms_norm_rope`) normalises each head over its own channels with Diffusers' ``RMSNorm`` (which
rounds ``x * rstd`` to the weight's 16-bit dtype before the weight's product), rotates only the video tokens (fp32
products, one rounding), and concatenates the text tokens' q and k after them; the kernel writes both parts straight
into the joint sequence, so the concatenation's copy goes too. FLUX does the same per head with ``torch.nn.RMSNorm``
(one rounding), text first, and rotates every token; Qwen-Image with Diffusers' RMSNorm and a complex table per stream
(``torch.view_as_real`` of it is the interleaved (cos, sin) pairs the kernel reads).

Runs on CUDA; on a CPU under ``TRITON_INTERPRET=1`` (fp16/fp32) for the tests. ``DIT_SPARSE_FUSED_PROLOGUE``: unset
uses it on CUDA, ``0`` never, ``1`` also under the interpreter.
"""

from __future__ import annotations

import os
from typing import Optional

import torch

from ..config import env_flag

try:
    import triton
    import triton.language as tl
except Exception:  # no (usable) triton: the processors keep the stock arithmetic
    triton = None

ENV = "DIT_SPARSE_FUSED_PROLOGUE"


def enabled(x: torch.Tensor) -> bool:
    """Whether ``rms_norm_rope`` runs for ``x`` here: Triton present, CUDA (or the interpreter when asked for), and
    not switched off."""
    if triton is None or not env_flag(ENV, True):
        return False
    return x.is_cuda or (env_flag(ENV, False) and os.environ.get("TRITON_INTERPRET", "0") == "1")


def supported_head_dim(head_dim: int) -> bool:
    # The kernel holds a head's channels as one power-of-two tile (Wan: 128).
    return head_dim >= 2 and head_dim & (head_dim - 1) == 0


def fusable(x: torch.Tensor, head_dim: int, norms, norm_class: type, weight_shape: tuple) -> bool:
    """Whether the fused prologue can stand in for ``norms`` (then RoPE) on the projection output ``x`` here: the
    kernel enabled for ``x``'s device, not inside torch.compile (Inductor fuses the stock ops itself), no autograd on
    ``x`` (the kernel has no backward), a power-of-two ``head_dim``, and every norm a ``norm_class`` (whose rounding
    the caller reproduces) with a weight of ``weight_shape`` in ``x``'s dtype and no bias. The processors add their
    rotary table's checks and ask the core whether our kernel runs the call."""
    if torch.compiler.is_compiling() or not enabled(x):
        return False
    if torch.is_grad_enabled() and x.requires_grad:
        return False
    if not supported_head_dim(head_dim) or x.shape[-1] % head_dim:
        return False
    return all(isinstance(n, norm_class) and n.weight is not None and getattr(n, "bias", None) is None
               and tuple(n.weight.shape) == tuple(weight_shape) and n.weight.dtype == x.dtype for n in norms)


if triton is not None:

    @triton.jit
    def _rms_norm_rope_kernel(
        x_ptr, w_ptr, cos_ptr, sin_ptr, out_ptr,
        L, rope_len, stride_xb, stride_xl, stride_cb, stride_cl, stride_cd, stride_sb, stride_sl, stride_sd,
        stride_ob, stride_ol, eps, inv_n,
        HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, H_TILE: tl.constexpr, PER_HEAD: tl.constexpr,
        ROUND_NORM: tl.constexpr, ROUND_PRODUCTS: tl.constexpr,
    ):
        HALF: tl.constexpr = HEAD_DIM // 2
        row = tl.program_id(0)
        b = (row // L).to(tl.int64)
        pos = (row % L).to(tl.int64)
        offs_h = tl.arange(0, H_TILE)[:, None]
        offs_d = tl.arange(0, HEAD_DIM)
        mask = (offs_h < HEADS) & (offs_d[None, :] < HEAD_DIM)
        # The row read and written contiguously (vector loads); the channel pairs split in registers.
        offs = offs_h * HEAD_DIM + offs_d[None, :]
        x = tl.load(x_ptr + b * stride_xb + pos * stride_xl + offs, mask=mask, other=0.0).to(tl.float32)
        dt = out_ptr.dtype.element_ty
        if PER_HEAD:
            # HunyuanVideo: each head normalised over its own channels, one weight per channel of a head.
            rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=1)[:, None] * inv_n + eps)
            w = tl.load(w_ptr + offs_d).to(tl.float32)[None, :]
        else:
            # Wan: one norm across all heads of the token.
            rstd = 1.0 / tl.sqrt(tl.sum(tl.sum(x * x, axis=1), axis=0) * inv_n + eps)
            w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if ROUND_NORM:
            # Diffusers' RMSNorm stores x * rstd in the weight's 16-bit dtype before multiplying by the weight.
            y = (x * rstd).to(dt).to(tl.float32) * w
        else:
            y = x * rstd * w
        # Rounded to the storage dtype between the norm and the rotation, as the stock path stores the norm's output.
        y = y.to(dt).to(tl.float32)
        y1, y2 = tl.split(tl.reshape(y, (H_TILE, HALF, 2)))
        # Both models' frequencies repeat each angle for the pair: cos at channel 2j, sin at 2j + 1. Rows from
        # ``rope_len`` on (HunyuanVideo's text tokens) are not rotated: cos 1 and sin 0 leave them exactly as normed.
        rot = offs_d < tl.where(pos < rope_len, HEAD_DIM, 0)
        c, _ = tl.split(tl.reshape(
            tl.load(cos_ptr + b * stride_cb + pos * stride_cl + offs_d * stride_cd, mask=rot, other=1.0)
            .to(tl.float32), (HALF, 2)))
        _, s = tl.split(tl.reshape(
            tl.load(sin_ptr + b * stride_sb + pos * stride_sl + offs_d * stride_sd, mask=rot, other=0.0)
            .to(tl.float32), (HALF, 2)))
        c = c[None, :]
        s = s[None, :]
        if ROUND_PRODUCTS:
            # 16-bit frequencies (a model cast with ``.to(dtype)``): the stock products are then 16-bit tensors too.
            ft = cos_ptr.dtype.element_ty
            o1 = (y1 * c).to(ft).to(tl.float32) - (y2 * s).to(ft).to(tl.float32)
            o2 = (y1 * s).to(ft).to(tl.float32) + (y2 * c).to(ft).to(tl.float32)
        else:
            o1 = y1 * c - y2 * s
            o2 = y1 * s + y2 * c
        o = tl.reshape(tl.join(o1, o2), (H_TILE, HEAD_DIM))
        tl.store(out_ptr + b * stride_ob + pos * stride_ol + offs, o.to(dt), mask=mask)


def _freq_strides(freqs: torch.Tensor, batch: int, length: int, head_dim: int, name: str):
    if freqs.dim() != 4 or freqs.shape[1] != length or freqs.shape[2] != 1 or freqs.shape[3] != head_dim \
            or freqs.shape[0] not in (1, batch):
        raise ValueError(
            f"{name} has shape {tuple(freqs.shape)}; expected (1 or {batch}, {length}, 1, {head_dim}) as Wan's rotary "
            "embedding returns it"
        )
    return (freqs.stride(0) if freqs.shape[0] > 1 else 0), freqs.stride(1), freqs.stride(3)


def _check_x(x: torch.Tensor, heads: int) -> torch.Tensor:
    if x.dim() != 3 or x.shape[-1] % heads or not supported_head_dim(x.shape[-1] // heads):
        raise ValueError(f"x has shape {tuple(x.shape)}; expected (B, L, heads * head_dim) with {heads} heads and a "
                         "power-of-two head_dim of at least 2")
    return x if x.stride(-1) == 1 else x.contiguous()


def _launch(x, weight, eps, freqs_cos, freqs_sin, heads, out, rope_len, cos_strides, sin_strides, *, per_head,
            round_norm, round_products):
    batch, length, width = x.shape
    if out.numel() == 0:
        return out
    _rms_norm_rope_kernel[(batch * length,)](
        x, weight, freqs_cos, freqs_sin, out,
        length, rope_len, x.stride(0), x.stride(1), *cos_strides, *sin_strides, out.stride(0), out.stride(1),
        float(torch.finfo(x.dtype).eps if eps is None else eps), 1.0 / (width // heads if per_head else width),
        HEADS=heads, HEAD_DIM=width // heads, H_TILE=triton.next_power_of_2(heads), PER_HEAD=per_head,
        ROUND_NORM=round_norm, ROUND_PRODUCTS=round_products,
        num_warps=4 if width <= 2048 else 8,
    )
    return out


def rms_norm_rope(
    x: torch.Tensor, weight: torch.Tensor, eps: Optional[float], freqs_cos: torch.Tensor, freqs_sin: torch.Tensor,
    heads: int,
) -> torch.Tensor:
    """Wan: ``rope(rms_norm(x).unflatten(-1, (heads, -1)))`` for a projection output ``x`` (B, L, heads * head_dim)
    whose last dim is contiguous, the norm ``torch.nn.RMSNorm`` across all heads; returns a new (B, L, heads, head_dim)
    tensor of ``x``'s dtype. ``eps=None`` means the dtype's machine epsilon (``torch.nn.RMSNorm``'s default)."""
    x = _check_x(x, heads)
    batch, length, width = x.shape
    head_dim = width // heads
    if weight.shape != (width,):
        raise ValueError(f"the norm's weight has shape {tuple(weight.shape)}; expected ({width},)")
    if freqs_cos.dtype != freqs_sin.dtype:
        raise ValueError(f"freqs_cos is {freqs_cos.dtype} and freqs_sin {freqs_sin.dtype}; expected one dtype")
    cos_strides = _freq_strides(freqs_cos, batch, length, head_dim, "freqs_cos")
    sin_strides = _freq_strides(freqs_sin, batch, length, head_dim, "freqs_sin")
    out = torch.empty(batch, length, heads, head_dim, device=x.device, dtype=x.dtype)
    # torch.nn.RMSNorm rounds once, after the weight; 16-bit frequencies make Wan's rotation products 16-bit.
    return _launch(x, weight, eps, freqs_cos, freqs_sin, heads, out, length, cos_strides, sin_strides,
                   per_head=False, round_norm=False,
                   round_products=freqs_cos.dtype == x.dtype and x.element_size() < 4)


NORMS = ("diffusers", "torch")


def head_rms_norm_rope(
    x: torch.Tensor, weight: torch.Tensor, eps: Optional[float], freqs_cos: torch.Tensor, freqs_sin: torch.Tensor,
    heads: int, rope_len: int, out: Optional[torch.Tensor] = None, *, norm: str = "diffusers",
) -> torch.Tensor:
    """HunyuanVideo and FLUX: an RMS norm of each head (weight of ``head_dim``), then Diffusers' ``apply_rotary_emb``
    (real, interleaved pairs, fp32 products) on the first ``rope_len`` tokens; the tokens after them (HunyuanVideo's
    text) are only normed. ``norm`` names the stock module whose rounding to reproduce: ``"diffusers"``
    (``diffusers.models.normalization.RMSNorm``, HunyuanVideo) or ``"torch"`` (``torch.nn.RMSNorm``, FLUX).
    ``x`` is (B, L, heads * head_dim) with a contiguous last dim, ``freqs_cos``/``freqs_sin`` (rope_len, head_dim).
    Writes into ``out`` when given — a (B, L, heads, head_dim) view with contiguous heads, e.g. a slice of the joint
    [video; text] sequence, which saves the concatenation — and returns it."""
    if norm not in NORMS:
        raise ValueError(f"norm={norm!r} is not known; use one of {', '.join(NORMS)}")
    x = _check_x(x, heads)
    batch, length, width = x.shape
    head_dim = width // heads
    if weight.shape != (head_dim,) or weight.dtype != x.dtype:
        raise ValueError(f"the norm's weight is {tuple(weight.shape)} {weight.dtype}; expected ({head_dim},) "
                         f"{x.dtype} (one weight per channel of a head, in x's dtype)")
    if not 0 <= rope_len <= length:
        raise ValueError(f"rope_len={rope_len} must lie in [0, {length}] (the rotated tokens come first)")
    for name, f in (("freqs_cos", freqs_cos), ("freqs_sin", freqs_sin)):
        if f.dim() != 2 or f.shape[1] != head_dim or f.shape[0] < rope_len:
            raise ValueError(f"{name} has shape {tuple(f.shape)}; expected ({rope_len}, {head_dim}) as "
                             "HunyuanVideo's rotary embedding returns it")
    if out is None:
        out = torch.empty(batch, length, heads, head_dim, device=x.device, dtype=x.dtype)
    elif (tuple(out.shape) != (batch, length, heads, head_dim) or out.dtype != x.dtype or out.stride(3) != 1
          or out.stride(2) != head_dim):
        raise ValueError(f"out is {tuple(out.shape)} {out.dtype} with strides {out.stride()}; expected "
                         f"({batch}, {length}, {heads}, {head_dim}) {x.dtype} with contiguous heads")
    # Diffusers' RMSNorm rounds twice with a 16-bit weight (x * rstd, then the weight's product), torch's once; the
    # rotation's products are fp32 whatever the frequencies' dtype (``x.float() * cos``).
    return _launch(x, weight, eps, freqs_cos, freqs_sin, heads, out, rope_len,
                   (0, freqs_cos.stride(0), freqs_cos.stride(1)), (0, freqs_sin.stride(0), freqs_sin.stride(1)),
                   per_head=True, round_norm=norm == "diffusers" and x.element_size() < 4, round_products=False)


def joint_head_rms_norm_rope(parts, heads: int, norm: str = "diffusers") -> torch.Tensor:
    """The joint sequence of several token spans built in one buffer, without a concatenation: each part
    ``(x, weight, eps, freqs_cos, freqs_sin, rope_len)`` goes through `head_rms_norm_rope` into the next span of a
    (B, sum of the parts' L, heads, head_dim) tensor, in the order given (HunyuanVideo: [video; text], FLUX and
    Qwen-Image: [text; image])."""
    first = parts[0][0]
    batch, _, width = first.shape
    out = first.new_empty(batch, sum(p[0].shape[1] for p in parts), heads, width // heads)
    start = 0
    for x, weight, eps, freqs_cos, freqs_sin, rope_len in parts:
        end = start + x.shape[1]
        head_rms_norm_rope(x, weight, eps, freqs_cos, freqs_sin, heads, rope_len, out=out[:, start:end], norm=norm)
        start = end
    return out


__all__ = ["ENV", "enabled", "fusable", "head_rms_norm_rope", "joint_head_rms_norm_rope", "rms_norm_rope",
           "supported_head_dim"]
