"""Tiny random Diffusers transformers (head_dim 64) and inputs shared by the tests."""

import os

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def tiny_wan(num_layers: int = 3, heads: int = 2, seed: int = 0):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    model = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=heads,
        attention_head_dim=64,
        in_channels=4,
        out_channels=4,
        text_dim=32,
        freq_dim=32,
        ffn_dim=64,
        num_layers=num_layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=64,
    )
    return model.eval()


def tiny_hunyuan(dual: int = 2, single: int = 2, heads: int = 2, seed: int = 0):
    from diffusers import HunyuanVideoTransformer3DModel

    torch.manual_seed(seed)
    model = HunyuanVideoTransformer3DModel(
        in_channels=4,
        out_channels=4,
        num_attention_heads=heads,
        attention_head_dim=64,
        num_layers=dual,
        num_single_layers=single,
        num_refiner_layers=1,
        patch_size=1,
        patch_size_t=1,
        guidance_embeds=True,
        text_embed_dim=16,
        pooled_projection_dim=8,
        rope_axes_dim=(16, 24, 24),
    )
    return model.eval()


def wan_inputs(batch=1, frames=5, height=8, width=12, seed=1, timestep=900.0):
    g = torch.Generator().manual_seed(seed)
    return {
        "hidden_states": torch.randn(batch, 4, frames, height, width, generator=g),
        "timestep": torch.full((batch,), timestep),
        "encoder_hidden_states": torch.randn(batch, 7, 32, generator=g),
        "return_dict": False,
    }


def hunyuan_inputs(batch=1, frames=5, height=6, width=10, text_len=9, valid=(6,), seed=1, timestep=900.0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(batch, text_len, dtype=torch.long)
    for b in range(batch):
        mask[b, : valid[b % len(valid)]] = 1
    return {
        "hidden_states": torch.randn(batch, 4, frames, height, width, generator=g),
        "timestep": torch.full((batch,), timestep),
        "encoder_hidden_states": torch.randn(batch, text_len, 16, generator=g),
        "encoder_attention_mask": mask,
        "pooled_projections": torch.randn(batch, 8, generator=g),
        "guidance": torch.full((batch,), 6000.0),
        "return_dict": False,
    }


def tiny_flux(dual: int = 1, single: int = 1, heads: int = 2, seed: int = 0):
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    model = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=dual,
        num_single_layers=single,
        attention_head_dim=64,
        num_attention_heads=heads,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        guidance_embeds=False,
        axes_dims_rope=(16, 24, 24),
    )
    return model.eval()


def flux_image_ids(height: int, width: int) -> torch.Tensor:
    """Flux's packed-latent position ids [height * width, 3] of (0, row, col), as its pipeline builds them."""
    ids = torch.zeros(height, width, 3)
    ids[..., 1] = torch.arange(height)[:, None]
    ids[..., 2] = torch.arange(width)[None, :]
    return ids.reshape(height * width, 3)


def flux_inputs(batch=1, height=6, width=10, text_len=7, seed=1, timestep=0.9):
    """Inputs for a (height * 16) x (width * 16) pixel image: a height x width grid of packed tokens."""
    g = torch.Generator().manual_seed(seed)
    return {
        "hidden_states": torch.randn(batch, height * width, 16, generator=g),
        "encoder_hidden_states": torch.randn(batch, text_len, 32, generator=g),
        "pooled_projections": torch.randn(batch, 32, generator=g),
        "timestep": torch.full((batch,), timestep),
        "img_ids": flux_image_ids(height, width),
        "txt_ids": torch.zeros(text_len, 3),
        "return_dict": False,
    }


def tiny_qwen_image(layers: int = 2, heads: int = 2, seed: int = 0):
    from diffusers import QwenImageTransformer2DModel

    torch.manual_seed(seed)
    model = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=layers,
        attention_head_dim=64,
        num_attention_heads=heads,
        joint_attention_dim=32,
        axes_dims_rope=(16, 24, 24),
    )
    return model.eval()


def qwen_image_inputs(batch=1, height=6, width=10, text_len=7, mask=None, seed=1, timestep=0.9):
    """Inputs for a (height * 16) x (width * 16) pixel image: a height x width grid of packed tokens, as
    QwenImagePipeline passes them (``img_shapes`` per sample; ``mask`` [batch, text_len] or None)."""
    g = torch.Generator().manual_seed(seed)
    return {
        "hidden_states": torch.randn(batch, height * width, 16, generator=g),
        "encoder_hidden_states": torch.randn(batch, text_len, 32, generator=g),
        "encoder_hidden_states_mask": mask,
        "timestep": torch.full((batch,), timestep),
        "img_shapes": [[(1, height, width)]] * batch,
        "return_dict": False,
    }
