"""The pytest plugin that runs Diffusers' own tests with our processors (bench/diffusers_tests.sh): no network."""

import pytest
import torch
from tiny_models import tiny_wan

from dit_sparse import DenseConfig, DraftConfig, RadialConfig
from dit_sparse.eval import diffusers_plugin
from dit_sparse.processors.wan import WanSparseAttnProcessor


def test_configs_from_env():
    name, cfg = diffusers_plugin.config_from_env({})
    assert name == "dense" and cfg == DenseConfig(dense_steps=0, dense_layers=0)
    name, cfg = diffusers_plugin.config_from_env({diffusers_plugin.ENV: "full"})
    assert cfg == DraftConfig(density=1.0, block_size=16, dense_steps=0, dense_layers=0)
    _, cfg = diffusers_plugin.config_from_env({diffusers_plugin.ENV: "radial-full", diffusers_plugin.BLOCK_ENV: "32"})
    assert cfg == RadialConfig(decay=16.0, block_size=32, dense_steps=0, dense_layers=0)
    with pytest.raises(ValueError, match="allowed: dense, full"):
        diffusers_plugin.config_from_env({diffusers_plugin.ENV: "sparse"})


def _inputs():
    g = torch.Generator().manual_seed(0)
    return dict(
        hidden_states=torch.randn(1, 4, 2, 16, 16, generator=g),  # 128 tokens: 8 blocks of 16
        encoder_hidden_states=torch.randn(1, 12, 32, generator=g),
        timestep=torch.tensor([500]),
    )


@pytest.mark.parametrize("name", ["dense", "full"])
def test_installs_our_processors_into_every_new_wan_and_undoes(name):
    from diffusers import WanTransformer3DModel

    stock = tiny_wan(num_layers=2)
    with torch.no_grad():
        expected = stock(**_inputs(), return_dict=False)[0]
    init = WanTransformer3DModel.__init__

    _, cfg = diffusers_plugin.config_from_env({diffusers_plugin.ENV: name})
    installer = diffusers_plugin.Installer(cfg)
    installer.install()
    try:
        model = tiny_wan(num_layers=2)  # built by WanTransformer3DModel(...) like Diffusers' tests do
        again = WanTransformer3DModel.from_config(model.config)  # ConfigMixin still sees the real signature
        procs = model.attn_processors
        assert isinstance(procs["blocks.0.attn1.processor"], WanSparseAttnProcessor)
        assert isinstance(procs["blocks.1.attn1.processor"], WanSparseAttnProcessor)
        assert not isinstance(procs["blocks.0.attn2.processor"], WanSparseAttnProcessor)
        assert isinstance(again.attn_processors["blocks.0.attn1.processor"], WanSparseAttnProcessor)
        assert installer.models == 2
        with torch.no_grad():
            out = model(**_inputs(), return_dict=False)[0]
        # Full budget equals dense: the stock output, to float rounding on the sparse path.
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
        assert installer.checked_calls == 2  # each call of ours also ran the stock processor, and agreed
        if name == "dense":
            assert (installer.dense_calls, installer.sparse_calls) == (2, 0)
        else:
            assert (installer.dense_calls, installer.sparse_calls) == (0, 2)
    finally:
        installer.undo()
    assert WanTransformer3DModel.__init__ is init
    assert not isinstance(tiny_wan(num_layers=1).attn_processors["blocks.0.attn1.processor"], WanSparseAttnProcessor)
