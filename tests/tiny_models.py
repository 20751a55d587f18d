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


def tiny_flux_pipeline(seed: int = 0):
    """A FluxPipeline of tiny random components built in memory (no download): the real pipeline class with
    FLUX.1-dev's structure (CLIP + T5 text encoders, 8x VAE, 2x2 latent packing, guidance embedding), so an H x W
    image is an (H/16) x (W/16) token grid as on the real model."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from dit_sparse.pipelines.tiny import build_tiny_tokenizer

    torch.manual_seed(seed)
    clip_tokenizer = build_tiny_tokenizer()
    clip_tokenizer.model_max_length = 77  # FluxPipeline pads CLIP prompts to the tokenizer's model_max_length
    t5_tokenizer = build_tiny_tokenizer()
    clip = CLIPTextModel(
        CLIPTextConfig(vocab_size=len(clip_tokenizer), hidden_size=32, intermediate_size=37, num_attention_heads=4,
                       num_hidden_layers=2, max_position_embeddings=77, projection_dim=32, pad_token_id=0,
                       bos_token_id=1, eos_token_id=1)
    ).eval()
    t5 = T5EncoderModel(
        T5Config(vocab_size=len(t5_tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                 relative_attention_num_buckets=8, relative_attention_max_distance=32, pad_token_id=0,
                 eos_token_id=1, decoder_start_token_id=0)
    ).eval()
    # Four blocks: 8x spatial compression, as FLUX's VAE (vae_scale_factor 8).
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
        latent_channels=4, norm_num_groups=4, use_quant_conv=False, use_post_quant_conv=False,
        shift_factor=0.0609, scaling_factor=1.5035,
    ).eval()
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=2, num_single_layers=1, attention_head_dim=64,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=True,
        axes_dims_rope=(16, 24, 24),
    ).eval()
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=clip, tokenizer=clip_tokenizer,
        text_encoder_2=t5, tokenizer_2=t5_tokenizer, transformer=transformer,
    )


def tiny_qwen_image_pipeline(seed: int = 0):
    """A QwenImagePipeline of tiny random components built in memory (no download): a two-layer Qwen2.5-VL text
    encoder with the character-level tokenizer of the packaged tiny model, an 8x Qwen-Image VAE and 2x2 latent
    packing, so an H x W image is an (H/16) x (W/16) token grid as on the real model."""
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImagePipeline,
        QwenImageTransformer2DModel,
    )
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from dit_sparse.pipelines.tiny import build_tiny_tokenizer

    torch.manual_seed(seed)
    tokenizer = build_tiny_tokenizer()
    vocab = 128  # above the tokenizer's ~100 ids; the vision token ids sit at the top, unused by text prompts
    text_encoder = Qwen2_5_VLForConditionalGeneration(
        Qwen2_5_VLConfig(
            text_config={
                "hidden_size": 32, "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                "num_key_value_heads": 2, "vocab_size": vocab, "bos_token_id": 1, "eos_token_id": 1,
                "rope_scaling": {"mrope_section": [2, 2, 4], "rope_type": "default", "type": "default"},
                "rope_theta": 1e6,
            },
            vision_config={"depth": 1, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2,
                           "out_hidden_size": 32},
            hidden_size=32, vocab_size=vocab, bos_token_id=1, eos_token_id=1, video_token_id=123,
            vision_start_token_id=124, vision_end_token_id=125, vision_token_id=126, image_token_id=127,
        )
    ).eval()
    # Three downsamplings: 8x spatial compression, as Qwen-Image's VAE.
    vae = AutoencoderKLQwenImage(
        base_dim=8, z_dim=4, dim_mult=[1, 2, 2, 2], num_res_blocks=1, temperal_downsample=[False, True, True],
        latents_mean=[0.0] * 4, latents_std=[1.0] * 4,
    ).eval()
    transformer = QwenImageTransformer2DModel(
        patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=64, num_attention_heads=2,
        joint_attention_dim=32, axes_dims_rope=(16, 24, 24),
    ).eval()
    return QwenImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
        transformer=transformer,
    )
