"""Bad values at the public entry points fail with a ValueError naming the argument, not later or silently."""

import pytest
from tiny_models import tiny_wan

import dit_sparse as ds
from dit_sparse.api import get_state


@pytest.mark.parametrize("bad", [-5, 0, 2.7, "abc", True, None])
def test_set_num_inference_steps_rejects_non_positive_ints(bad):
    model = tiny_wan(num_layers=1)
    ds.apply_sparse_attention(model, ds.RadialConfig(dense_steps=0.5, dense_layers=0, block_size=16))
    with pytest.raises(ValueError, match="num_steps must be a positive int"):
        ds.set_num_inference_steps(model, bad)
    assert get_state(model).total_steps is None
    ds.set_num_inference_steps(model, 4)
    assert get_state(model).total_steps == 4
