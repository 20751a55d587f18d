import pytest

from dit_sparse import DenseConfig, DraftConfig, RadialConfig, SemanticConfig, make_config


def test_defaults_validate():
    for cls in (DenseConfig, RadialConfig, SemanticConfig, DraftConfig):
        cfg = cls()
        # Semantic's cluster pieces (~65 tokens at Wan 480p) fill 64-row tiles better (see SemanticConfig).
        assert cfg.block_size == (64 if cls is SemanticConfig else 128) and cfg.backend == "auto"


@pytest.mark.parametrize(
    "cls, kwargs, field",
    [
        (RadialConfig, {"dense_steps": -1}, "dense_steps"),
        (RadialConfig, {"dense_steps": 1.5}, "dense_steps"),
        (RadialConfig, {"dense_steps": "3"}, "dense_steps"),
        (RadialConfig, {"dense_layers": -2}, "dense_layers"),
        (RadialConfig, {"refresh_every": 0}, "refresh_every"),
        (RadialConfig, {"backend": "cuda"}, "backend"),
        (RadialConfig, {"block_size": 100}, "block_size"),
        (RadialConfig, {"decay": 0.0}, "decay"),
        (RadialConfig, {"spatial": "3d"}, "spatial"),
        (SemanticConfig, {"top_p": 0.0}, "top_p"),
        (SemanticConfig, {"top_p": 1.2}, "top_p"),
        (SemanticConfig, {"q_clusters": 0}, "q_clusters"),
        (SemanticConfig, {"kv_clusters": 2.5}, "kv_clusters"),
        (SemanticConfig, {"kmeans_iters": 0}, "kmeans_iters"),
        (SemanticConfig, {"min_kv_ratio": -0.1}, "min_kv_ratio"),
        (DraftConfig, {"density": 0.0}, "density"),
        (DraftConfig, {"density": 1.01}, "density"),
        (DraftConfig, {"pool": (8,)}, "pool"),
        (RadialConfig, {"min_sparse_tokens": -1}, "min_sparse_tokens"),
        (DraftConfig, {"min_sparse_tokens": 1.5}, "min_sparse_tokens"),
        (SemanticConfig, {"min_sparse_tokens": "12288"}, "min_sparse_tokens"),
        (RadialConfig, {"min_sparse_tokens": True}, "min_sparse_tokens"),
    ],
)
def test_bad_values_name_the_field(cls, kwargs, field):
    with pytest.raises(ValueError, match=field):
        cls(**kwargs)


def test_make_config():
    cfg = make_config("radial", decay=0.5, dense_steps=3)
    assert isinstance(cfg, RadialConfig) and cfg.decay == 0.5 and cfg.dense_steps == 3
    assert isinstance(make_config("dense"), DenseConfig)
    with pytest.raises(ValueError, match="known methods: dense, radial, semantic, draft"):
        make_config("sliding")
    with pytest.raises(ValueError, match="no option"):
        make_config("radial", top_p=0.9)


def test_min_sparse_tokens_auto_is_per_device_type():
    import torch

    auto = RadialConfig()
    assert auto.min_sparse_tokens is None
    assert auto.resolve_min_sparse_tokens(torch.device("cuda", 1)) == 12288  # ComfyUI's threshold
    assert auto.resolve_min_sparse_tokens("cuda") == 12288
    assert auto.resolve_min_sparse_tokens(torch.device("cpu")) == 0
    for value in (0, 100, 50_000):
        cfg = DraftConfig(min_sparse_tokens=value)
        assert cfg.resolve_min_sparse_tokens("cuda") == value and cfg.resolve_min_sparse_tokens("cpu") == value
    assert make_config("semantic", min_sparse_tokens=0).to_dict()["min_sparse_tokens"] == 0


def test_fraction_of_steps():
    cfg = RadialConfig(dense_steps=0.25)
    assert cfg.resolve_dense_steps(50) == 12 or cfg.resolve_dense_steps(50) == 13
    assert RadialConfig(dense_steps=4).resolve_dense_steps(None) == 4
    with pytest.raises(ValueError, match="step count is unknown"):
        cfg.resolve_dense_steps(None)


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    "cls, kwargs, field",
    [
        (DraftConfig, {"density": NAN}, "density"),
        (DraftConfig, {"density": INF}, "density"),
        (SemanticConfig, {"top_p": NAN}, "top_p"),
        (SemanticConfig, {"min_kv_ratio": NAN}, "min_kv_ratio"),
        (RadialConfig, {"decay": NAN}, "decay"),
        (RadialConfig, {"decay": -INF}, "decay"),
        (RadialConfig, {"dense_steps": NAN}, "dense_steps"),
    ],
)
def test_nan_and_inf_are_rejected(cls, kwargs, field):
    with pytest.raises(ValueError, match=rf"{field}=.*not a finite number; give a number in"):
        cls(**kwargs)


@pytest.mark.parametrize(
    "cls, kwargs, field",
    [
        (DraftConfig, {"global_budget": "no"}, "global_budget"),
        (DraftConfig, {"global_budget": 1}, "global_budget"),
        (RadialConfig, {"sink": "yes"}, "sink"),
        (RadialConfig, {"sink": 0}, "sink"),
    ],
)
def test_bool_fields_must_be_bool(cls, kwargs, field):
    with pytest.raises(ValueError, match=rf"{field} must be True(,| or) False"):
        cls(**kwargs)


def test_configs_are_read_only_after_construction():
    import dataclasses

    cfg = RadialConfig(decay=0.5)
    with pytest.raises(ValueError, match=r"RadialConfig.block_size cannot be changed .*dataclasses.replace"):
        cfg.block_size = 100
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.decay = 0.3
    assert cfg.block_size == 128 and cfg.decay == 0.5
    # Copies go through dataclasses.replace, which validates again.
    assert dataclasses.replace(cfg, decay=0.3).decay == 0.3
    with pytest.raises(ValueError, match="block_size"):
        dataclasses.replace(cfg, block_size=100)
    # Construction-time normalisation still works, and the copy is read-only too.
    draft = DraftConfig(pool=[8, 16])
    assert draft.pool == (8, 16)
    with pytest.raises(ValueError, match="pool"):
        draft.pool = (4, 4)
