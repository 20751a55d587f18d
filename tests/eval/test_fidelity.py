"""dit_sparse.eval.fidelity: synthetic video-DiT q/k/v, chunked attention error and mass, density matching."""

import json
import math

import pytest
import torch

from dit_sparse import BlockLayout, VideoGeometry
from dit_sparse.eval import fidelity as F
from dit_sparse.kernels import block_sparse_attention

# Small grids: 17 frames so that radial's minimum density (frame pairs at distance <= 1, the sink) is low enough.
GEOM = VideoGeometry(17, 8, 8)  # 1088 tokens
BLOCK = 16


@pytest.fixture(scope="module")
def qkv():
    return F.synthetic_qkv(GEOM, heads=4, head_dim=32, seed=0)


@pytest.fixture(scope="module")
def reference(qkv):
    return F.DenseReference(*qkv)


def _token_mask(layout: BlockLayout, b: int, h: int) -> torch.Tensor:
    """Brute force: the [B, H, Lq, Lk] token mask of a layout, from its permutations and block boundaries."""
    from dit_sparse.kernels.reference import block_starts

    lq, lk = layout.seq_len_q, layout.seq_len_kv
    mask = layout.to_block_mask().expand(b, h, -1, -1)
    qs = block_starts(layout, "q", "cpu").expand(b, h, -1)
    ks = block_starts(layout, "kv", "cpu").expand(b, h, -1)
    out = torch.zeros(b, h, lq, lk, dtype=torch.bool)
    for bi in range(b):
        for hi in range(h):
            qperm = torch.arange(lq) if layout.q_perm is None else layout.q_perm.expand(b, h, -1)[bi, hi]
            kperm = torch.arange(lk) if layout.kv_perm is None else layout.kv_perm.expand(b, h, -1)[bi, hi]
            for i in range(mask.shape[2]):
                q_tok = qperm[qs[bi, hi, i] : qs[bi, hi, i + 1]]
                for j in torch.nonzero(mask[bi, hi, i]).flatten().tolist():
                    k_tok = kperm[ks[bi, hi, j] : ks[bi, hi, j + 1]]
                    out[bi, hi, q_tok.unsqueeze(1), k_tok.unsqueeze(0)] = True
    return out


def _permuted_variable_layout(length: int, heads: int, seed: int = 0) -> BlockLayout:
    """A layout with per-head token permutations, variable blocks (some empty) and a random selection."""
    gen = torch.Generator().manual_seed(seed)
    cuts = [0]  # block sizes 0..16 (0 = an empty padding block, as the semantic pattern emits)
    while cuts[-1] < length:
        cuts.append(min(length, cuts[-1] + int(torch.randint(0, 17, (1,), generator=gen))))
    starts = torch.tensor(cuts, dtype=torch.int32).view(1, 1, -1)
    n = starts.shape[-1] - 1
    mask = torch.rand(1, heads, n, n, generator=gen) < 0.3
    mask |= torch.eye(n, dtype=torch.bool)
    q_perm = torch.stack([torch.randperm(length, generator=gen) for _ in range(heads)]).unsqueeze(0)
    kv_perm = torch.stack([torch.randperm(length, generator=gen) for _ in range(heads)]).unsqueeze(0)
    return BlockLayout.from_block_mask(
        mask, 16, 16, length, length, q_block_starts=starts, kv_block_starts=starts, q_perm=q_perm, kv_perm=kv_perm
    )


# ------------------------------------------------------------------------------------------------ synthetic data
def test_rope_axes_dims():
    assert F.rope_axes_dims(128, "wan") == (44, 42, 42)
    assert F.rope_axes_dims(64, "wan") == (24, 20, 20)
    assert F.rope_axes_dims(128, "hunyuan_video") == (16, 56, 56)
    assert F.rope_axes_dims(64, "hunyuan_video") == (8, 28, 28)
    for d in (32, 64, 96, 128):
        for model in ("wan", "hunyuan_video"):
            dims = F.rope_axes_dims(d, model)
            assert sum(dims) == d and all(x % 2 == 0 and x > 0 for x in dims)


def test_rope_matches_diffusers_wan():
    wan = pytest.importorskip("diffusers.models.transformers.transformer_wan")
    geom = VideoGeometry(3, 4, 5)
    rope = wan.WanRotaryPosEmbed(attention_head_dim=64, patch_size=(1, 2, 2), max_seq_len=64)
    cos, sin = rope(torch.zeros(1, 1, geom.frames, 2 * geom.height, 2 * geom.width))  # [1, L, 1, D]
    x = torch.randn(1, geom.num_tokens, 2, 64)  # (B, L, H, D) as the processor sees it
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    expect = torch.empty_like(x)
    expect[..., 0::2] = x1 * cos[..., 0::2].float() - x2 * sin[..., 1::2].float()
    expect[..., 1::2] = x1 * sin[..., 1::2].float() + x2 * cos[..., 0::2].float()
    got = F.rope_3d(x.transpose(1, 2), geom, "wan").transpose(1, 2)
    torch.testing.assert_close(got, expect, atol=1e-5, rtol=1e-5)


def test_rope_matches_diffusers_hunyuan():
    hv = pytest.importorskip("diffusers.models.transformers.transformer_hunyuan_video")
    emb = pytest.importorskip("diffusers.models.embeddings")
    geom = VideoGeometry(3, 4, 5, "hunyuan_video")
    rope = hv.HunyuanVideoRotaryPosEmbed(2, 1, list(F.rope_axes_dims(64, "hunyuan_video")), 256.0)
    cos, sin = rope(torch.zeros(1, 1, geom.frames, 2 * geom.height, 2 * geom.width))  # [L, D]
    x = torch.randn(1, 2, geom.num_tokens, 64)
    expect = emb.apply_rotary_emb(x, (cos, sin), use_real=True, use_real_unbind_dim=-1)
    torch.testing.assert_close(F.rope_3d(x, geom, "hunyuan_video"), expect, atol=1e-5, rtol=1e-5)


def test_rope_scores_depend_on_relative_position():
    geom = VideoGeometry(4, 3, 5)
    c = torch.randn(1, 1, 1, 32).expand(1, 1, geom.num_tokens, 32)
    r = F.rope_3d(c, geom)[0, 0]
    s = r @ r.t()
    coords = geom.token_coords()
    # Same displacement, same score: (0,0,0)->(1,1,2) and (2,1,1)->(3,2,3).
    a = [int(((coords == torch.tensor(p)).all(-1)).nonzero()) for p in ((0, 0, 0), (1, 1, 2), (2, 1, 1), (3, 2, 3))]
    assert math.isclose(float(s[a[0], a[1]]), float(s[a[2], a[3]]), rel_tol=1e-4)
    assert float(s.diagonal().min()) > float(s.max()) - 1e-3  # a token scores itself highest


def test_synthetic_shapes_and_determinism(qkv):
    q, k, v = qkv
    assert q.shape == k.shape == v.shape == (1, 4, GEOM.num_tokens, 32)
    assert q.dtype == torch.float32 and torch.isfinite(q).all() and torch.isfinite(v).all()
    q2, _, _ = F.synthetic_qkv(GEOM, heads=4, head_dim=32, seed=0)
    q3, _, _ = F.synthetic_qkv(GEOM, heads=4, head_dim=32, seed=1)
    assert torch.equal(q, q2) and not torch.equal(q, q3)
    qb, _, _ = F.synthetic_qkv(VideoGeometry(3, 4, 4, "hunyuan_video"), heads=2, head_dim=16, batch=2)
    assert qb.shape == (2, 2, 48, 16)


def test_synthetic_attention_is_nontrivial(qkv, reference):
    """Entropy well between one-hot (0) and uniform (log L) in every head; attention decays with distance."""
    q, k, _ = qkv
    log_l = math.log(GEOM.num_tokens)
    ent = reference.entropy.mean((0, 2))
    assert ((ent > 0.1 * log_l) & (ent < 0.85 * log_l)).all(), ent
    torch.testing.assert_close(reference.entropy, F.attention_entropy(q, k, chunk_size=100))
    # Positional decay: in most heads the frames at distance <= 1 hold more than half of the mass (3/17 of keys).
    frame = GEOM.token_coords()[:, 0]
    near = (frame.view(-1, 1) - frame.view(1, -1)).abs() <= 1
    p = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), -1)
    near_mass = (p * near).sum(-1).mean((0, 2))
    assert int((near_mass > 0.5).sum()) >= 3, near_mass
    assert float(p.max(-1).values.mean()) < 0.8  # not one-hot


# ------------------------------------------------------------------------------------------------ attention error
def test_dense_layout_has_no_error(qkv, reference):
    q, k, v = qkv
    layout = BlockLayout.dense(1, 1, GEOM.num_tokens, GEOM.num_tokens, BLOCK, BLOCK)
    err = F.attention_error(q, k, v, layout, reference=reference)
    assert err["rel_l2"] < 1e-5
    assert err["mass_kept"] == pytest.approx(1.0, abs=1e-5)
    assert err["density"] == pytest.approx(1.0)


def test_random_layout_error(qkv, reference):
    q, k, v = qkv
    layout = F.random_block_layout(GEOM.num_tokens, GEOM.num_tokens, 4, 0.3, BLOCK, seed=0)
    layout.validate()
    err = F.attention_error(q, k, v, layout, reference=reference)
    assert err["density"] == pytest.approx(0.3, abs=0.002)
    assert 0.15 < err["mass_kept"] < 0.6
    assert err["rel_l2"] > 0.05
    # The diagonal block is always kept.
    mask = layout.to_block_mask()
    assert mask[..., torch.arange(mask.shape[2]), torch.arange(mask.shape[2])].all()


def test_chunked_equals_unchunked(qkv):
    q, k, v = (x[:, :2, :300] for x in qkv)
    full = F.DenseReference(q, k, v, chunk_size=300)
    chunked = F.DenseReference(q, k, v, chunk_size=7)
    torch.testing.assert_close(chunked.out, full.out)
    torch.testing.assert_close(chunked.fixed_block_mass(BLOCK), full.fixed_block_mass(BLOCK))
    for layout in (
        F.random_block_layout(300, 300, 2, 0.3, BLOCK, seed=3),
        _permuted_variable_layout(300, 2, seed=1),
    ):
        a = F.attention_error(q, k, v, layout, reference=full)
        b = F.attention_error(q, k, v, layout, chunk_size=7)
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("variable", [True, False])
def test_mass_and_output_match_brute_force(qkv, variable):
    """Token-level mask from the layout (perms, variable and empty blocks): mass, and kernel == masked output."""
    q, k, v = (x[:, :2, :200] for x in qkv)
    if variable:
        layout = _permuted_variable_layout(200, 2, seed=2)
    else:  # fixed blocks over per-head permutations (the draft pattern's kind), mass from the cached block mass
        gen = torch.Generator().manual_seed(5)
        perms = [torch.stack([torch.randperm(200, generator=gen) for _ in range(2)]).unsqueeze(0) for _ in range(2)]
        mask = torch.rand(1, 2, 13, 13, generator=gen) < 0.3
        layout = BlockLayout.from_block_mask(mask, 16, 16, 200, 200, q_perm=perms[0], kv_perm=perms[1])
    tok = _token_mask(layout, 1, 2)
    p = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), -1)
    s = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).masked_fill(~tok, float("-inf"))
    expect_out = torch.nan_to_num(torch.softmax(s, -1)) @ v
    dense = p @ v
    expect_rel = float((expect_out - dense).norm() / dense.norm())
    ref = F.DenseReference(q, k, v, chunk_size=33)
    for mode in ("kernel", "masked", "auto"):
        err = F.attention_error(q, k, v, layout, reference=ref, sparse=mode)
        assert err["mass_kept"] == pytest.approx(float((p * tok).sum(-1).mean()), abs=1e-5)
        assert err["rel_l2"] == pytest.approx(expect_rel, rel=1e-4)
    # token_blocks maps every original token to the block holding it in the permuted order.
    qb = F.token_blocks(layout, "q", 1, 2)
    from dit_sparse.kernels.reference import block_starts

    starts = block_starts(layout, "q", "cpu")[0, 0]
    for h in range(2):
        pos = torch.empty(200, dtype=torch.long).scatter_(0, layout.q_perm[0, h], torch.arange(200))
        assert ((starts[qb[0, h]] <= pos) & (pos < starts[qb[0, h] + 1])).all()
    out = block_sparse_attention(q, k, v, layout, backend="reference")
    torch.testing.assert_close(out, expect_out, atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------------------------------------ matched density
def test_radial_beats_random_at_matched_density(qkv, reference):
    q, k, v = qkv
    layout, knob, dens, _ = F.tune_layout("radial", q, k, GEOM, 0.35, BLOCK)
    assert abs(dens - 0.35) < 0.06 and knob["decay"] > 0
    rad = F.attention_error(q, k, v, layout, reference=reference)
    rnd = F.attention_error(
        q, k, v, F.random_block_layout(GEOM.num_tokens, GEOM.num_tokens, 4, dens, BLOCK), reference=reference
    )
    assert rnd["density"] == pytest.approx(dens, abs=0.005)
    assert rad["rel_l2"] < 0.8 * rnd["rel_l2"]
    assert rad["mass_kept"] > rnd["mass_kept"] + 0.1


def test_tune_knobs_reach_targets(qkv):
    q, k, _ = qkv
    for method in ("draft", "semantic"):
        if F.pattern_available(method, BLOCK) is not None:
            continue
        options = F.default_method_options(GEOM.num_tokens).get(method, {})
        _, knob, dens, evals = F.tune_layout(method, q, k, GEOM, 0.3, BLOCK, options=options)
        assert abs(dens - 0.3) < 0.03, (method, knob, dens, evals)
    # Radial below its minimum density: the sparsest mask, the floor recorded.
    lowest: dict = {}
    layout, _, dens, _ = F.tune_layout("radial", q, k, GEOM, 0.05, BLOCK, min_density=lowest)
    assert dens > 0.05 and lowest["radial"] == pytest.approx(dens)


def test_tune_monotone_search():
    # A step function: the nearest reachable value wins; a smooth one converges within the tolerance.
    def fake(fn):
        def build(x):
            d = fn(x)
            return BlockLayout.from_block_mask(
                torch.arange(1000).view(1, 1, 1, 1000) < round(d * 1000), 16, 16, 16, 16000
            )

        return build

    x, _, d, n = F._tune(fake(lambda x: x**3), 0.3, 1e-3, 1.0, False, 20)
    assert abs(d - 0.3) <= F.DENSITY_TOLERANCE and n < 15
    x, _, d, n = F._tune(fake(lambda x: 0.2 if x < 0.5 else 0.6), 0.3, 1e-3, 1.0, False, 20)
    assert d == pytest.approx(0.2)


# ------------------------------------------------------------------------------------------------ table and CLI
def test_fidelity_table_and_markdown(monkeypatch):
    from dit_sparse import patterns

    monkeypatch.setitem(patterns.PATTERNS, "draft", ("no_such_module_here", "Nope"))
    info: dict = {}
    rows = F.fidelity_table(
        VideoGeometry(9, 4, 8),
        heads=2,
        head_dim=16,
        densities=(0.5,),
        methods=("radial", "draft", "random"),
        block_size=16,
        info=info,
    )
    by = {r["method"]: r for r in rows}
    assert by["draft"]["density"] is None and "unavailable" in by["draft"]["note"]
    assert by["random"]["density"] == pytest.approx(0.5, abs=0.01)
    assert 0 < by["radial"]["mass_kept"] <= 1 and "random_rel_l2" in by["radial"]
    assert len(info["entropy_per_head"]) == 2
    table = F.markdown_table(rows)
    lines = table.splitlines()
    assert lines[0].startswith("| method | target | density | rel_l2 | mass_kept")
    assert len(lines) == 2 + len(rows) and all(line.count("|") == lines[0].count("|") for line in lines)
    assert "unavailable" in table and "—" in table


def test_cli_writes_json(tmp_path, capsys):
    out = tmp_path / "fid.json"
    rc = F.main(
        [
            "--out",
            str(out),
            "--markdown",
            "--geometry",
            "5x4x8",
            "--heads",
            "1",
            "--head-dim",
            "16",
            "--block-size",
            "16",
            "--densities",
            "0.5",
            "--methods",
            "radial,random",
        ]
    )
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["settings"]["geometry"] == [5, 4, 8] and data["commit"] and data["date"]
    assert {r["method"] for r in data["rows"]} == {"radial", "random"}
    assert capsys.readouterr().out.startswith("| method |")


def test_stub_pattern_reported_unavailable(monkeypatch):
    from dit_sparse.patterns import radial

    def stub(self, q, k, geometry, cache):
        raise NotImplementedError("not yet")

    monkeypatch.setattr(radial.RadialPattern, "plan", stub)
    rows = F.fidelity_table(
        VideoGeometry(5, 4, 8), heads=1, head_dim=16, densities=(0.3, 0.5), methods=("radial",), block_size=16
    )
    assert len(rows) == 1 and rows[0]["density"] is None and "not yet" in rows[0]["note"]


def test_oracle_keeps_a_variants_own_block_size(monkeypatch):
    """``evaluate_captures`` runs every method at the oracle's block size unless the method names its own (a variant
    of 128-token query groups with 32-token key groups must not silently become 32 / 32)."""
    from dit_sparse import VideoGeometry
    from dit_sparse.eval.oracle import CapturedAttention, evaluate_captures
    from dit_sparse.eval.photo_qkv import photo_qkv
    from dit_sparse.patterns.semantic import SemanticPattern

    geometry = VideoGeometry(2, 8, 16)
    cap = CapturedAttention(*photo_qkv(geometry, heads=2, head_dim=32), geometry, layer=0, step=0, branch=0)
    seen, plan = [], SemanticPattern.plan

    def spy(self, q, k, geo, cache):
        layout = plan(self, q, k, geo, cache)
        seen.append((layout.block_q, layout.block_kv))
        return layout

    monkeypatch.setattr(SemanticPattern, "plan", spy)
    methods = {"own": {"method": "semantic", "clusters": "balanced", "block_size": 64, "kv_block_size": 16},
               "default": {"method": "semantic", "clusters": "balanced"}}
    rows = evaluate_captures([cap], methods, (), block_size=32, random_seeds=1)
    assert seen == [(64, 16), (32, 32)] and [r["method"] for r in rows] == ["own", "default"]
