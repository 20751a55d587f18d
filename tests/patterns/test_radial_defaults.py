"""Radial's model-specific default decay: known models get theirs, an unknown model is an error, not decay 1.0."""

import pytest

from dit_sparse import RadialConfig, VideoGeometry
from dit_sparse.patterns.radial import MODEL_DEFAULT_DECAY, RadialPattern


def test_known_models_get_their_default_decay():
    pattern = RadialPattern(RadialConfig())
    for model, decay in MODEL_DEFAULT_DECAY.items():
        assert pattern.decay_for(VideoGeometry(3, 4, 4, model)) == decay
    assert MODEL_DEFAULT_DECAY == {"wan": 0.2, "hunyuan_video": 0.95}


def test_unknown_model_without_decay_raises():
    with pytest.raises(ValueError, match=r"no default decay for model 'flux'.*RadialConfig\(decay=\.\.\.\)"):
        RadialPattern(RadialConfig()).decay_for(VideoGeometry(3, 4, 4, "flux"))


def test_unknown_model_with_explicit_decay_works():
    assert RadialPattern(RadialConfig(decay=0.5)).decay_for(VideoGeometry(3, 4, 4, "flux")) == 0.5
