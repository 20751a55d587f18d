"""A tiny Wan-architecture text-to-video pipeline that builds offline in a second (the ``tiny`` model).

Every component is the real Diffusers / transformers class (``WanPipeline``, ``WanTransformer3DModel``,
``AutoencoderKLWan``, ``UMT5EncoderModel``, a fast tokenizer), only much smaller, so the whole generation path -
prompt encoding, classifier-free guidance, the scheduler, the step hook, sparse processors, VAE decoding, mp4 export -
runs on a laptop CPU, in CI and in the Gradio demo without downloading anything. The VAE keeps Wan's compression
(4x in time, 8x in space: ``frames = 4k + 1`` and sides that are multiples of 16 work as for the real models).

``build_tiny_pipeline`` first looks for a pretrained folder (``$DIT_SPARSE_TINY_MODEL``, else the packaged
``dit_sparse/pipelines/tiny_model/``, saved with ``WanPipeline.save_pretrained``) and loads it; without one it builds
a small architecture with random weights from a fixed seed. Random weights make noise-like videos, but every shape,
schedule and timing is real.

``build_small_pipeline`` loads the ``small`` model (33x384x640, 8,640 tokens: the sequence lengths sparse attention is
for) from ``$DIT_SPARSE_SMALL_MODEL`` or the packaged ``dit_sparse/pipelines/small_model/``. It has no random
fallback: at that size random weights would only make slow noise, so a missing folder is an error that says how to
train or unpack one.
"""

from __future__ import annotations

import os
import string
from pathlib import Path
from typing import Optional, Union

import torch

# The folder a trained tiny model will ship in (``WanPipeline.save_pretrained`` layout); the environment variable
# points to another such folder instead (e.g. a freshly trained one).
PRETRAINED_DIR = Path(__file__).resolve().parent / "tiny_model"
ENV_VAR = "DIT_SPARSE_TINY_MODEL"
# The same for the ``small`` model (trained by ``python -m dit_sparse.pipelines.train_tiny --preset small``).
SMALL_PRETRAINED_DIR = Path(__file__).resolve().parent / "small_model"
SMALL_ENV_VAR = "DIT_SPARSE_SMALL_MODEL"

# Architecture of the random tiny model. The transformer uses head_dim 64, which every sparse kernel supports.
TEXT_DIM = 32
Z_DIM = 8
TRANSFORMER_CONFIG = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=2,
    attention_head_dim=64,
    in_channels=Z_DIM,
    out_channels=Z_DIM,
    text_dim=TEXT_DIM,
    freq_dim=32,
    ffn_dim=128,
    num_layers=3,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    rope_max_seq_len=1024,
)
VAE_CONFIG = dict(
    # Channels 8/16/16/16 and one residual block per decoder level: VAE decoding dominates the CPU time of a tiny
    # generation (full-resolution 3D convolutions), so it is kept as thin as Wan's structure allows.
    base_dim=8,
    z_dim=Z_DIM,
    dim_mult=[1, 2, 2, 2],
    num_res_blocks=0,
    attn_scales=[],
    temperal_downsample=[False, True, True],  # (sic, Diffusers' spelling): 4x temporal, 8x spatial like Wan
    latents_mean=[0.0] * Z_DIM,
    latents_std=[1.0] * Z_DIM,
)
TEXT_ENCODER_CONFIG = dict(
    d_model=TEXT_DIM,
    d_kv=8,
    d_ff=64,
    num_layers=2,
    num_heads=4,
    relative_attention_num_buckets=8,
    relative_attention_max_distance=32,
    dropout_rate=0.0,
    feed_forward_proj="gated-gelu",
    pad_token_id=0,
    eos_token_id=1,
    decoder_start_token_id=0,
)

SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")  # ids 0, 1, 2 as in T5 / UMT5


def _vocabulary() -> dict:
    """Character-level vocabulary: every printable ASCII character is a token, so distinct prompts stay distinct."""
    chars = [c for c in string.printable if not c.isspace() or c == " "]
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for c in chars:
        vocab.setdefault(c, len(vocab))
    return vocab


def build_tiny_tokenizer():
    """A T5-style fast tokenizer built in memory (``</s>`` appended, ``<pad>`` = 0), no download.

    Returns:
        `transformers.PreTrainedTokenizerFast` that supports what ``WanPipeline`` asks of it:
        ``tokenizer(prompts, padding="max_length", max_length=512, truncation=True, add_special_tokens=True,
        return_attention_mask=True, return_tensors="pt")``.
    """
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = _vocabulary()
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    # One token per character (spaces included), which needs no learned merges.
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", vocab["</s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=512,
        padding_side="right",
    )


def dtype_kwarg(dtype: torch.dtype) -> dict:
    """``{"dtype": dtype}`` for Diffusers versions that renamed ``torch_dtype`` (0.42+ warns on the old name), else
    ``{"torch_dtype": dtype}``."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401  (present since the rename)
    except ImportError:
        return {"torch_dtype": dtype}
    return {"dtype": dtype}


def _find_pretrained(pretrained_dir: Optional[Union[str, os.PathLike]], env_var: str = ENV_VAR,
                     default: Path = PRETRAINED_DIR) -> Optional[Path]:
    if pretrained_dir is None:
        pretrained_dir = os.environ.get(env_var) or default
    path = Path(pretrained_dir).expanduser()
    return path if (path / "model_index.json").is_file() else None


def _load_pretrained(path: Path, dtype: torch.dtype):
    """``WanPipeline.from_pretrained(path)``: transformer / text encoder in ``dtype``, the VAE in float32."""
    from diffusers import AutoencoderKLWan, WanPipeline

    vae = AutoencoderKLWan.from_pretrained(path, subfolder="vae", **dtype_kwarg(torch.float32))
    return WanPipeline.from_pretrained(path, vae=vae, **dtype_kwarg(dtype))


def build_tiny_pipeline(
    seed: int = 0,
    device: Union[str, torch.device] = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    pretrained_dir: Optional[Union[str, os.PathLike]] = None,
    random_init: bool = False,
):
    """The ``tiny`` Wan text-to-video pipeline: the packaged pretrained one if present, else a random one.

    Args:
        seed (`int`, defaults to 0): seed of the random weights (ignored when a pretrained folder is loaded).
        device (`str` or `torch.device`, defaults to "cpu"): where to put the pipeline.
        dtype (`torch.dtype`, defaults to `torch.float32`): dtype of the transformer and text encoder; the VAE stays
            in float32, as Diffusers recommends for Wan.
        pretrained_dir (`str` or `os.PathLike`, *optional*): a ``WanPipeline.save_pretrained`` folder to load instead
            of ``$DIT_SPARSE_TINY_MODEL`` or the packaged ``dit_sparse/pipelines/tiny_model/``.
        random_init (`bool`, defaults to False): ignore any pretrained folder and build random weights.

    Returns:
        `diffusers.WanPipeline`, with ``pipe._dit_sparse_tiny_source`` set to the folder it was loaded from or
        ``"random"``.
    """
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel

    found = None if random_init else _find_pretrained(pretrained_dir)
    if found is not None:
        pipe = _load_pretrained(found, dtype)
        source = str(found)
    else:
        if pretrained_dir is not None and not random_init:
            raise ValueError(
                f"{pretrained_dir} has no model_index.json; pass a folder written by WanPipeline.save_pretrained "
                "(or no pretrained_dir for the packaged / random tiny model)"
            )
        from transformers import UMT5Config, UMT5EncoderModel

        tokenizer = build_tiny_tokenizer()
        torch.manual_seed(seed)
        transformer = WanTransformer3DModel(**TRANSFORMER_CONFIG)
        vae = AutoencoderKLWan(**VAE_CONFIG)
        text_encoder = UMT5EncoderModel(UMT5Config(vocab_size=len(tokenizer), **TEXT_ENCODER_CONFIG))
        scheduler = UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0, num_train_timesteps=1000
        )
        pipe = WanPipeline(
            tokenizer=tokenizer,
            text_encoder=text_encoder.eval(),
            vae=vae.eval(),
            scheduler=scheduler,
            transformer=transformer.eval(),
        )
        if dtype != torch.float32:
            pipe.transformer.to(dtype)
            pipe.text_encoder.to(dtype)
        source = "random"
    pipe.to(device)
    pipe._dit_sparse_tiny_source = source
    return pipe


def build_small_pipeline(
    device: Union[str, torch.device] = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    pretrained_dir: Optional[Union[str, os.PathLike]] = None,
):
    """The trained ``small`` Wan text-to-video pipeline (native size 33x384x640: 9x24x40 = 8,640 tokens).

    Args:
        device (`str` or `torch.device`, defaults to "cpu"): where to put the pipeline.
        dtype (`torch.dtype`, defaults to `torch.float32`): dtype of the transformer and text encoder; the VAE stays
            in float32.
        pretrained_dir (`str` or `os.PathLike`, *optional*): a ``WanPipeline.save_pretrained`` folder to load instead
            of ``$DIT_SPARSE_SMALL_MODEL`` or the packaged ``dit_sparse/pipelines/small_model/``.

    Returns:
        `diffusers.WanPipeline`, with ``pipe._dit_sparse_tiny_source`` set to the folder it was loaded from.

    Raises:
        ValueError: no such folder holds a pipeline (there is no random fallback; the message says how to get one).
    """
    found = _find_pretrained(pretrained_dir, SMALL_ENV_VAR, SMALL_PRETRAINED_DIR)
    if found is None:
        where = pretrained_dir or os.environ.get(SMALL_ENV_VAR) or SMALL_PRETRAINED_DIR
        raise ValueError(
            f"the 'small' model's weights are not installed: {where} has no model_index.json. Train them on a GPU "
            "with `python -m dit_sparse.pipelines.train_tiny --preset small --out DIR --minutes 8 --pack PACK` and "
            f"point ${SMALL_ENV_VAR} to DIR, or unpack a packed run with `cat PACK/small_model.tar.part-* | tar -x "
            f"-C {SMALL_PRETRAINED_DIR}` (or use --model tiny, which ships with the package)"
        )
    pipe = _load_pretrained(found, dtype)
    pipe.to(device)
    pipe._dit_sparse_tiny_source = str(found)
    return pipe


__all__ = [
    "PRETRAINED_DIR",
    "SMALL_ENV_VAR",
    "SMALL_PRETRAINED_DIR",
    "build_small_pipeline",
    "build_tiny_pipeline",
    "build_tiny_tokenizer",
    "dtype_kwarg",
]
