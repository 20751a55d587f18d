import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_models import hunyuan_inputs, tiny_hunyuan, tiny_wan, wan_inputs

import dit_sparse as ds
from dit_sparse import SemanticConfig, VideoGeometry
from dit_sparse.api import get_state
from dit_sparse.kernels import block_sparse_attention
from dit_sparse.layout import pack_block_mask
from dit_sparse.patterns import make_pattern, semantic
from dit_sparse.patterns.kmeans import assign_clusters, batched_kmeans, inertia, strided_init
from dit_sparse.patterns.semantic import SemanticPattern, max_pieces, select_clusters


def dense_attention(q, k, v):
    s = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(q.shape[-1])
    return torch.softmax(s, -1) @ v.float()


def clustered(b, h, length, d, centers, seed, spread=0.3):
    """Mixture of gaussians per (batch, head): q and k drawn around the same random centres."""
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(b, h, centers, d, generator=g) * 2.0

    def draw():
        lab = torch.randint(0, centers, (b, h, length), generator=g)
        noise = spread * torch.randn(b, h, length, d, generator=g)
        return mu.gather(2, lab.unsqueeze(-1).expand(-1, -1, -1, d)) + noise

    return draw(), draw(), torch.randn(b, h, length, d, generator=g)


def cfg(**kw):
    # The structural tests below exercise Sparse VideoGen 2's separate q / k clusterings; the joint default has its
    # own tests at the end.
    base = dict(q_clusters=7, kv_clusters=13, block_size=16, kmeans_iters=10, warm_iters=2, clusters="separate")
    base.update(kw)
    return SemanticConfig(**base)


def check_layout(layout):
    """Structural invariants of a variable layout: monotone starts ending at L, blocks <= block, padding empty."""
    layout.validate()
    for starts, block, length in (
        (layout.q_block_starts, layout.block_q, layout.seq_len_q),
        (layout.kv_block_starts, layout.block_kv, layout.seq_len_kv),
    ):
        sizes = starts[..., 1:] - starts[..., :-1]
        assert (sizes >= 0).all() and (sizes <= block).all()
        assert (starts[..., 0] == 0).all() and (starts[..., -1] == length).all()
    q_sizes = layout.q_block_starts[..., 1:] - layout.q_block_starts[..., :-1]
    assert (layout.kv_counts[q_sizes == 0] == 0).all()
    # A kept key block is never an empty padding block.
    kv_sizes = (layout.kv_block_starts[..., 1:] - layout.kv_block_starts[..., :-1]).long()
    mask = layout.to_block_mask()
    assert (mask & (kv_sizes == 0).unsqueeze(2)).sum() == 0


# ---------------------------------------------------------------------------------------------------- k-means
def test_kmeans_inertia_matches_sklearn():
    sklearn = pytest.importorskip("sklearn.cluster")
    q, _, _ = clustered(1, 3, 500, 8, centers=6, seed=0, spread=0.8)
    x = q[0]  # [3, 500, 8]: three independent problems in one batched call
    init = strided_init(x, 6)
    for iters in (1, 5, 20):
        labels, cent, counts = batched_kmeans(x, 6, iters)
        # sklearn ends with one more assignment step; ours returns the clusters whose means are the centroids.
        final = inertia(x, assign_clusters(x, cent), cent)
        ours = inertia(x, labels, cent)
        assert (final <= ours + 1e-3).all()
        for i in range(3):
            km = sklearn.KMeans(6, init=init[i].double().numpy(), n_init=1, max_iter=iters, algorithm="lloyd", tol=0)
            km.fit(x[i].double().numpy())
            assert abs(float(final[i]) - km.inertia_) <= 0.05 * km.inertia_, (iters, i, float(final[i]), km.inertia_)
            if iters >= 20:
                assert abs(float(ours[i]) - km.inertia_) <= 0.05 * km.inertia_, (iters, i, float(ours[i]))
        assert torch.equal(counts.sum(-1), torch.full((3,), 500.0))
        # Centroids are the means of the returned clusters.
        for c in range(6):
            sel = labels[0] == c
            if sel.any():
                torch.testing.assert_close(cent[0, c], x[0][sel].mean(0), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_warm_kmeans_centres_on_its_centroids_without_reading_the_points_twice(monkeypatch, backend):
    # A warm start centres on its centroids' mean, not the points' (a pass over q and k saved per plan); k-means is
    # translation invariant, so the clustering is the cold centre's.
    from dit_sparse.patterns import kmeans as kmeans_module

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    x = torch.randn(2, 96, 16) + 4.0  # a large common component, as q and k have
    init = batched_kmeans(x, 6, 5, backend=backend)[1]
    want = batched_kmeans(x - 4.0, 6, 2, init=init - 4.0, backend=backend)
    calls = []
    points_mean = kmeans_module._points_mean
    monkeypatch.setattr(kmeans_module, "_points_mean", lambda parts: calls.append(1) or points_mean(parts))
    labels, cent, counts = batched_kmeans(x, 6, 2, init=init, backend=backend)
    assert calls == []
    assert torch.equal(labels, want[0]) and torch.equal(counts, want[2])
    torch.testing.assert_close(cent - 4.0, want[1], atol=1e-5, rtol=0)


def test_kmeans_empty_clusters_keep_centroid_and_zero_iters_only_assigns():
    x = torch.zeros(2, 40, 4)
    x[:, 20:] = 1.0  # two distinct points, five clusters: three stay empty
    labels, cent, counts = batched_kmeans(x, 5, 3)
    assert int((counts > 0).sum()) == 4 and torch.isfinite(cent).all()
    assert set(labels[0].tolist()) <= set(torch.nonzero(counts[0]).flatten().tolist())
    init = torch.randn(2, 5, 4)
    labels0, cent0, counts0 = batched_kmeans(x, 5, 0, init=init)
    torch.testing.assert_close(cent0, init, atol=1e-6, rtol=0)
    assert torch.equal(labels0, assign_clusters(x, init))
    assert torch.equal(counts0.sum(-1), torch.full((2,), 40.0))


def test_kmeans_sample_fits_on_a_sample_then_assigns_every_point():
    """``sample``: the iterations before the last run on every n-th point, the last on all of them, so the result is
    one full iteration from the sample's centroids (exact means of a full assignment)."""
    from dit_sparse.patterns.kmeans import batched_kmeans

    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 400, 8, generator=g) + 1.0
    init = x[:, :12].clone()
    labels, cent, counts = batched_kmeans(x, 12, 3, init=init, sample=4)
    fitted = batched_kmeans(x[:, ::4], 12, 2, init=init)[1]
    want = batched_kmeans(x, 12, 1, init=fitted)
    assert torch.equal(labels, want[0]) and torch.equal(counts, want[2]) and counts.sum() == 800
    torch.testing.assert_close(cent, want[1], atol=1e-5, rtol=1e-5)
    assert not torch.equal(labels, batched_kmeans(x, 12, 3, init=init)[0])  # the sample changed the fit
    same = batched_kmeans(x, 12, 3, init=init, sample=1)
    assert torch.equal(same[0], batched_kmeans(x, 12, 3, init=init)[0])
    # A sample never drops below k points (400 // 150 = 2); a bad value is named.
    assert batched_kmeans(x, 150, 2, sample=10)[2].sum() == 800
    with pytest.raises(ValueError, match="sample"):
        batched_kmeans(x, 12, 2, sample=0)
    with pytest.raises(ValueError, match="kmeans_sample"):
        ds.make_config("semantic", kmeans_sample=0)
    # With one warm iteration (the presets) there is nothing before the last to sample: named, not ignored.
    with pytest.raises(ValueError, match="warm_iters >= 2"):
        ds.make_config("semantic", kmeans_sample=4, warm_iters=1)
    assert ds.make_config("semantic", kmeans_sample=1, warm_iters=1).warm_iters == 1


def test_kmeans_sample_applies_to_warm_plans_only(monkeypatch):
    """The cold start (once per video and layer) fits on every token; warm-started plans fit on the sample."""
    from dit_sparse.patterns import semantic

    seen = []
    real = semantic.batched_kmeans
    monkeypatch.setattr(semantic, "batched_kmeans", lambda *a, sample=1, **kw: seen.append(sample) or real(
        *a, sample=sample, **kw))
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 2, 256, 16, generator=g), torch.randn(1, 2, 256, 16, generator=g)
    geometry = VideoGeometry(1, 16, 16)
    pattern = make_pattern(ds.make_config("semantic", block_size=32, kv_clusters=8, kmeans_sample=4))
    cache = {}
    pattern.plan(q, k, geometry, cache)
    pattern.plan(q, k, geometry, cache)
    assert seen == [1, 4]


_TRITON_CHECK = """
import importlib.util, sys, torch
spec = importlib.util.spec_from_file_location("km", sys.argv[1])
km = importlib.util.module_from_spec(spec)
spec.loader.exec_module(km)
torch.manual_seed(0)
for n, length, k, d, iters in [(2, 300, 13, 16, 3), (3, 257, 70, 64, 0), (1, 130, 5, 32, 2)]:
    x = torch.randn(n, length, d) + 3.0  # an offset: the kernel centres the points
    c = torch.randn(n, k, d) + 3.0
    assert torch.equal(km.assign_clusters(x, c, "torch"), km.assign_clusters(x, c, "triton"))
    for sample in (1, 3):  # iterations before the last on every 3rd point
        a = km.batched_kmeans(x, k, iters, backend="torch", sample=sample)
        b = km.batched_kmeans(x, k, iters, backend="triton", sample=sample)
        assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])
        torch.testing.assert_close(a[1], b[1], atol=1e-5, rtol=1e-5)
# Points in two parts (semantic's [q, k]), each a strided view of (L, N, D) memory as the processors pass them: the
# kernel reads both in place and must agree with the concatenated points on either engine.
# Both ways of summing the clusters: sorted runs (default) and the assignment kernel's atomics.
for km.SUMS_BY_SORT, (n, length, k, d, iters) in [(True, (2, 300, 13, 16, 3)), (True, (3, 130, 7, 32, 0)),
                                                  (False, (2, 300, 13, 16, 3))]:
    q = (torch.randn(length, n, d) + 2.0).transpose(0, 1)
    kk = (torch.randn(length, n, d) - 1.0).transpose(0, 1)
    joined = torch.cat([q, kk], -1)
    c = torch.randn(n, k, 2 * d)
    assert torch.equal(km.assign_clusters((q, kk), c, "triton"), km.assign_clusters(joined, c, "torch"))
    a = km.batched_kmeans(joined, k, iters, backend="torch")
    for b in (km.batched_kmeans((q, kk), k, iters, backend="triton"), km.batched_kmeans((q, kk), k, iters)):
        assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])
        torch.testing.assert_close(a[1], b[1], atol=1e-5, rtol=1e-5)
print("ok")
"""


def test_triton_kmeans_matches_torch_under_interpreter():
    # The fused CUDA kernel, run by Triton's CPU interpreter in a fresh process (the flag must precede the import).
    pytest.importorskip("triton")
    path = Path(__file__).resolve().parents[2] / "dit_sparse" / "patterns" / "kmeans.py"
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run(
        [sys.executable, "-c", _TRITON_CHECK, str(path)], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]


def test_select_clusters_top_p_min_keep_and_empty():
    torch.manual_seed(0)
    qc, kc = torch.randn(2, 3, 8), torch.randn(2, 5, 8) * 3
    counts = torch.tensor([[10.0, 0.0, 3.0, 7.0, 1.0], [4.0, 4.0, 4.0, 4.0, 0.0]])
    dense = select_clusters(qc, kc, counts, 0.35, 1.0, 0)
    assert torch.equal(dense, (counts > 0).unsqueeze(1).expand(-1, 3, -1))
    sel = select_clusters(qc, kc, counts, 0.35, 0.5, 2)
    assert not sel[..., 1][0].any() and not sel[1, :, 4].any()  # empty clusters never kept
    assert (sel.sum(-1) >= 2).all()
    # Reference: the smallest prefix of the mass-sorted clusters whose mass reaches top_p.
    logits = (qc @ kc.transpose(1, 2)) * 0.35 + counts.log().unsqueeze(1)
    p = logits.softmax(-1)
    for n in range(2):
        for a in range(3):
            order = p[n, a].argsort(descending=True).tolist()
            keep, mass = set(), 0.0
            for j in order:
                if counts[n, j] == 0:
                    continue
                if mass < 0.5 or len(keep) < 2:
                    keep.add(j)
                    mass += float(p[n, a, j])
            assert set(torch.nonzero(sel[n, a]).flatten().tolist()) == keep


def test_top_p_kernel_matches_the_sort_under_interpreter():
    # The fused top-p kernel (CUDA default) against the sort path, under Triton's interpreter: rows of random
    # masses with empty key blocks, padding rows, min_keep above and below what top_p keeps, the diagonal with equal
    # and finer key blocks, and one [1, Pk] row of sizes shared by every head (fixed blocks).
    pytest.importorskip("triton")
    from dit_sparse.patterns.block_mass import top_p_block_lists, top_p_block_mask

    g = torch.Generator().manual_seed(0)
    n, pq = 2, 6
    cases = [(29, 1, False), (29, 1, True), (12, 2, True)]
    for pk, kv_per_q, shared in cases:
        valid = torch.rand(1 if shared else n, pk, generator=g) > 0.2
        sizes = torch.randint(1, 65, valid.shape, generator=g).float() * valid
        logits = 3 * torch.randn(n, pq, pk, generator=g) + sizes.log().unsqueeze(1)
        mass = logits.softmax(-1)
        own = torch.arange(pq) * kv_per_q
        row_valid = (torch.rand(n, pq, generator=g) > 0.2) & valid.expand(n, -1)[:, own]  # a row owns its block
        for top_p, min_keep in ((0.5, 0), (0.9, 7), (0.99, 2)):
            for diagonal in (False, True):
                args = (mass, sizes, top_p, min_keep, valid, diagonal, kv_per_q, row_valid)
                want_idx, want_cnt = top_p_block_lists(*args, engine="torch")
                got_idx, got_cnt = top_p_block_lists(*args, engine="triton")
                assert torch.equal(got_cnt, want_cnt), (pk, top_p, min_keep, diagonal)
                assert torch.equal(got_idx, want_idx), (pk, top_p, min_keep, diagonal)
                # The same selection written as a mask (semantic's packed pieces combine it further).
                want_mask = top_p_block_mask(*args, engine="torch")
                assert torch.equal(top_p_block_mask(*args, engine="triton"), want_mask)
                assert torch.equal(pack_block_mask(want_mask)[1], want_cnt)
    assert (want_cnt > 0).any() and (want_cnt < valid.sum()).any()  # the cases select, not all or nothing


def test_pack_mask_and_static_bound():
    mask = torch.tensor([[True, False, True, True], [False] * 4, [False, False, False, True]])
    idx, cnt = pack_block_mask(mask)
    assert cnt.tolist() == [3, 0, 1]
    assert idx.tolist() == [[0, 2, 3, 3], [0, 0, 0, 0], [3, 3, 3, 3]]
    # The bound holds for every split of L tokens into K clusters (random and adversarial).
    g = torch.Generator().manual_seed(0)
    for length, k, block in [(300, 7, 16), (1000, 50, 128), (129, 3, 64)]:
        worst = [block + 1] * (length // (block + 1))
        splits = [torch.multinomial(torch.ones(k), length, True, generator=g).bincount(minlength=k).tolist()]
        if len(worst) < k:
            splits.append(worst + [length - sum(worst)] + [0] * (k - len(worst) - 1))
        for counts in splits:
            assert sum(-(-c // block) for c in counts) <= max_pieces(length, k, block)


# ---------------------------------------------------------------------------------------------------- pattern
@pytest.mark.parametrize("fixed_blocks", [False, True])
def test_top_p_one_equals_dense_on_odd_length(fixed_blocks):
    geometry = VideoGeometry(3, 10, 10)  # L = 300, not a multiple of the block
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 300, 32) for _ in range(3))
    layout = SemanticPattern(cfg(top_p=1.0), fixed_blocks=fixed_blocks).plan(q, k, geometry, {})
    if not fixed_blocks:
        check_layout(layout)
        # The static bound pads with empty blocks here: the reference kernel must skip them.
        sizes = layout.q_block_starts[..., 1:] - layout.q_block_starts[..., :-1]
        assert (sizes == 0).any()
    assert float(layout.density()) == pytest.approx(1.0)
    out = block_sparse_attention(q, k, v, layout, backend="reference")
    torch.testing.assert_close(out, dense_attention(q, k, v), atol=1e-5, rtol=1e-5)
    out, lse = block_sparse_attention(q, k, v, layout, backend="reference", return_lse=True)
    s = (q @ k.transpose(-1, -2)) / math.sqrt(32)
    torch.testing.assert_close(lse, torch.logsumexp(s, -1), atol=1e-5, rtol=1e-5)


def test_top_p_one_with_empty_clusters_is_dense():
    geometry = VideoGeometry(2, 5, 7)
    torch.manual_seed(1)
    q = torch.zeros(1, 2, 70, 16)  # identical queries: one non-empty query cluster
    k, v = torch.randn(1, 2, 70, 16), torch.randn(1, 2, 70, 16)
    k[:, :, :40] = 0.5  # forty identical keys
    layout = SemanticPattern(cfg(top_p=1.0, q_clusters=5, kv_clusters=20)).plan(q, k, geometry, {})
    check_layout(layout)
    out = block_sparse_attention(q, k, v, layout, backend="reference")
    torch.testing.assert_close(out, dense_attention(q, k, v), atol=1e-5, rtol=1e-5)


def cold_clusters(x, clusters, config):
    """The labels and counts a cold-start plan computes (same deterministic k-means), [B, H, L] and [B, H, K]."""
    b, h, length, d = x.shape
    labels, _, counts = batched_kmeans(x.flatten(0, 1), min(clusters, length), config.kmeans_iters)
    return labels.view(b, h, length), counts.view(b, h, -1)


def test_sparse_selection_is_exactly_the_chosen_cluster_pairs():
    geometry = VideoGeometry(13, 4, 6)
    length, d = geometry.num_tokens, 16
    q, k, v = clustered(1, 2, length, d, centers=6, seed=3)
    config = cfg(top_p=0.5, estimate="centroids")  # Sparse VideoGen 2's rule: per query cluster
    cache = {}
    layout = SemanticPattern(config).plan(q, k, geometry, cache)
    check_layout(layout)
    q_lab, _ = cold_clusters(q, config.q_clusters, config)
    k_lab, k_counts = cold_clusters(k, config.kv_clusters, config)
    select = select_clusters(
        cache["q_centroids"].flatten(0, 1),
        cache["k_centroids"].flatten(0, 1),
        k_counts.flatten(0, 1),
        1 / math.sqrt(d),
        0.5,
        math.ceil(0.1 * 13),
    )
    select = select.view(1, 2, 7, 13)
    # Token pair (i, j) is computed iff key cluster of j is kept by the query cluster of i.
    token = select.gather(2, q_lab.unsqueeze(-1).expand(-1, -1, -1, 13))  # [1, 2, L, Kk]
    token = token.gather(3, k_lab.unsqueeze(2).expand(-1, -1, length, -1))  # [1, 2, L, L]
    assert 0.05 < token.float().mean() < 0.95
    s = torch.where(token, q @ k.transpose(-1, -2) / math.sqrt(d), torch.tensor(float("-inf")))
    expected = torch.softmax(s, -1) @ v
    out = block_sparse_attention(q, k, v, layout, backend="reference")
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    # The variable layout computes exactly the selection: its token-weighted density is the token mask's.
    assert float(layout.density()) == pytest.approx(float(token.float().mean()), abs=1e-6)


def test_top_p_half_is_sparse_on_clustered_inputs():
    geometry = VideoGeometry(13, 4, 6)  # 312 tokens
    q, k, v = clustered(2, 2, geometry.num_tokens, 16, centers=8, seed=0)
    densities = {}
    for fixed in (False, True):
        config = cfg(top_p=0.5, q_clusters=8, kv_clusters=16, estimate="centroids")
        layout = SemanticPattern(config, fixed_blocks=fixed).plan(
            q, k, geometry, {}
        )
        densities[fixed] = float(layout.density())
        out = block_sparse_attention(q, k, v, layout, backend="reference")
        assert torch.isfinite(out).all()
        # On well-separated clusters the selection keeps most of the attention output.
        assert (out - dense_attention(q, k, v)).abs().mean() < 0.3
    assert densities[False] < 0.85, densities
    assert densities[True] < 1.0
    assert densities[False] <= densities[True] + 1e-6  # cluster-aligned blocks never compute more than fixed ones


@pytest.mark.parametrize("fixed_blocks", [False, True])
def test_static_kmax_has_no_host_read_and_same_result(fixed_blocks):
    geometry = VideoGeometry(13, 4, 6)
    q, k, v = clustered(1, 2, geometry.num_tokens, 16, centers=6, seed=3)
    config = cfg(top_p=0.3, min_kv_ratio=0.0, block_size=16)
    trimmed = SemanticPattern(config, fixed_blocks=fixed_blocks, static_kmax=False).plan(q, k, geometry, {})
    static = SemanticPattern(config, fixed_blocks=fixed_blocks, static_kmax=True).plan(q, k, geometry, {})
    bound = static.num_kv_blocks
    assert static.kv_indices.shape[-1] == bound
    assert trimmed.kv_indices.shape[-1] < bound and trimmed.kv_indices.shape[-1] % 16 == 0
    assert torch.equal(trimmed.kv_counts, static.kv_counts)
    assert torch.equal(trimmed.to_block_mask(), static.to_block_mask())
    out_t = block_sparse_attention(q, k, v, trimmed, backend="reference")
    torch.testing.assert_close(out_t, block_sparse_attention(q, k, v, static, backend="reference"), atol=1e-6, rtol=0)


@pytest.mark.parametrize("pack_pieces", [False, True])
def test_automatic_static_kmax_reads_the_width_only_on_large_layouts(monkeypatch, pack_pieces):
    # static_kmax=None (the default): small index lists keep their static width and the plan reads nothing on the
    # host (the read idles the GPU where calls are short); above STATIC_KMAX_MAX_ENTRIES the width is read and trimmed.
    geometry = VideoGeometry(13, 4, 6)
    q, k, _ = clustered(1, 2, geometry.num_tokens, 16, centers=6, seed=3)
    options = dict(top_p=0.3, min_kv_ratio=0.0, block_size=16)
    if pack_pieces:
        options.update(pack_pieces=True, cluster_order="similarity", clusters="joint")
    config = cfg(**options)
    reads = []
    to_int = torch.Tensor.__int__
    monkeypatch.setattr(torch.Tensor, "__int__", lambda t: reads.append(t) or to_int(t))
    small = SemanticPattern(config).plan(q, k, geometry, {})
    assert reads == []
    assert small.kv_indices.shape[-1] == small.num_kv_blocks
    monkeypatch.setattr(semantic, "STATIC_KMAX_MAX_ENTRIES", small.kv_indices.numel() - 1)
    large = SemanticPattern(config).plan(q, k, geometry, {})
    assert len(reads) == 1
    assert large.kv_indices.shape[-1] < large.num_kv_blocks
    assert torch.equal(large.to_block_mask(), small.to_block_mask())


def test_permutation_round_trip_and_labels_cluster_aligned():
    geometry = VideoGeometry(5, 6, 7)
    q, k, _ = clustered(2, 3, geometry.num_tokens, 16, centers=5, seed=4)
    config = cfg(top_p=0.7)
    layout = SemanticPattern(config).plan(q, k, geometry, {})
    length = geometry.num_tokens
    for perm, x, starts, which in (
        (layout.q_perm, q, layout.q_block_starts, "q"),
        (layout.kv_perm, k, layout.kv_block_starts, "k"),
    ):
        assert perm.dtype == torch.int64 and perm.shape == (2, 3, length)
        assert torch.equal(perm.sort(-1).values, torch.arange(length).expand(2, 3, -1))  # a permutation
        xp = x.gather(2, perm.unsqueeze(-1).expand(-1, -1, -1, 16))
        back = torch.empty_like(xp).scatter_(2, perm.unsqueeze(-1).expand_as(xp), xp)
        assert torch.equal(back, x)
        clusters = config.q_clusters if which == "q" else config.kv_clusters
        labels, counts = cold_clusters(x, clusters, config)
        assert labels.min() >= 0 and labels.max() < clusters and (counts.sum(-1) == length).all()
        lp = labels.gather(2, perm)
        # Clusters are contiguous runs in permuted order, and every block holds tokens of one cluster.
        assert (lp[..., 1:] >= lp[..., :-1]).all()
        block = torch.searchsorted(
            starts[..., 1:].long().contiguous(), torch.arange(length).expand(2, 3, -1).contiguous(), right=True
        )
        first = lp.gather(2, starts[..., :-1].long().clamp(max=length - 1)).gather(2, block)
        assert torch.equal(first, lp)


def test_warm_start_uses_cache_and_warm_iters():
    geometry = VideoGeometry(8, 5, 6)  # 240 tokens: room for 13 clusters of >= 16 tokens
    q, k, v = clustered(1, 2, geometry.num_tokens, 16, centers=4, seed=5)
    cache = {}
    SemanticPattern(cfg(kmeans_iters=30, warm_iters=3)).plan(q, k, geometry, cache)
    assert cache["q_iters"] == 30 and cache["k_iters"] == 30
    assert cache["q_centroids"].shape == (1, 2, 7, 16) and cache["k_centroids"].shape == (1, 2, 13, 16)
    cached = {n: cache[n].clone() for n in ("q_centroids", "k_centroids")}
    # warm_iters=0: the layout is the cached centroids' assignment, centroids unchanged.
    layout = SemanticPattern(cfg(warm_iters=0)).plan(q, k, geometry, cache)
    assert cache["q_iters"] == 0 and torch.equal(cache["q_centroids"], cached["q_centroids"])
    labels = assign_clusters(q.flatten(0, 1), cached["q_centroids"].flatten(0, 1)).view(1, 2, -1)
    assert torch.equal(layout.q_perm, torch.sort(labels, dim=-1, stable=True).indices)
    # A shape change (other cluster count) is a cold start.
    SemanticPattern(cfg(q_clusters=5)).plan(q, k, geometry, cache)
    assert cache["q_iters"] == 10 and cache["k_iters"] == 2


def test_joint_clusters_warm_start_from_the_cache():
    """Joint clusters pass q and k to k-means as two parts (read in place, not concatenated): a second plan must warm
    start from the cached [q, k] centroids (a tuple of parts once broke the cache check) and assign exactly as the
    concatenated points would."""
    geometry = VideoGeometry(8, 5, 6)
    q, k, v = clustered(1, 2, geometry.num_tokens, 16, centers=4, seed=5)
    cache = {}
    SemanticPattern(cfg(clusters="joint", kmeans_iters=30, warm_iters=3)).plan(q, k, geometry, cache)
    assert cache["qk_iters"] == 30 and cache["qk_centroids"].shape == (1, 2, 13, 32)
    cached = cache["qk_centroids"].clone()
    layout = SemanticPattern(cfg(clusters="joint", warm_iters=0)).plan(q, k, geometry, cache)
    assert cache["qk_iters"] == 0 and torch.equal(cache["qk_centroids"], cached)
    labels = assign_clusters(torch.cat([q, k], -1).flatten(0, 1), cached.flatten(0, 1)).view(1, 2, -1)
    assert torch.equal(layout.q_perm, torch.sort(labels, dim=-1, stable=True).indices)
    SemanticPattern(cfg(clusters="joint", warm_iters=2)).plan(q, k, geometry, cache)
    assert cache["qk_iters"] == 2


def test_make_pattern_and_clusters_clamp_to_length(caplog):
    pattern = make_pattern(SemanticConfig())
    assert isinstance(pattern, SemanticPattern) and pattern.name == "semantic" and not pattern.static
    geometry = VideoGeometry(1, 3, 3)
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 1, 9, 8) for _ in range(3))
    cache = {}
    with caplog.at_level(logging.WARNING, logger="dit_sparse.patterns.semantic"):
        layout = SemanticPattern(cfg(q_clusters=50, kv_clusters=100, top_p=1.0)).plan(q, k, geometry, cache)
    # At most one cluster per MIN_CLUSTER_TOKENS tokens, and the user is told.
    assert cache["k_centroids"].shape[2] == 1 and "using 1 / 1" in caplog.text
    torch.testing.assert_close(
        block_sparse_attention(q, k, v, layout, backend="reference"), dense_attention(q, k, v), atol=1e-5, rtol=1e-5
    )


# ---------------------------------------------------------------------------------------------------- models
def run_wan(model, **kw):
    with torch.no_grad():
        return model(**wan_inputs(**kw))[0]


def semantic_keys(state):
    return sorted(key for key, c in state.caches.items() if "q_centroids" in c)


def test_wan_cache_warm_across_steps_and_reset_on_new_run():
    model = tiny_wan()
    config = SemanticConfig(
        dense_steps=0, dense_layers=0, block_size=16, q_clusters=4, kv_clusters=8, kmeans_iters=6, warm_iters=1,
        clusters="separate",
    )
    ds.apply_sparse_attention(model, config)
    kw = dict(frames=5, height=8, width=12)
    run_wan(model, timestep=900.0, **kw)
    state = get_state(model)
    keys = semantic_keys(state)
    assert len(keys) == 3 and all(key[2] == 0 for key in keys)  # 3 layers, branch 0
    assert all(state.caches[key]["q_iters"] == 6 for key in keys)
    first = {key: state.caches[key]["k_centroids"] for key in keys}
    run_wan(model, timestep=800.0, **kw)
    assert semantic_keys(state) == keys
    for key in keys:
        assert state.caches[key]["q_iters"] == 1 and state.caches[key]["k_iters"] == 1
        assert state.caches[key]["k_centroids"] is not first[key]
    run_wan(model, timestep=900.0, **kw)  # a larger timestep starts a new run: caches cleared, cold start
    assert semantic_keys(state) == keys
    assert all(state.caches[key]["q_iters"] == 6 for key in keys)
    assert ds.summary(model)["sparse_calls"] == 3


def test_wan_batch2_and_cfg_branches_have_own_caches():
    model = tiny_wan()
    # refresh_every=2: the layout is kept for the next step (with 1 nothing reads it, so nothing keeps it).
    config = SemanticConfig(dense_steps=0, dense_layers=0, block_size=16, q_clusters=4, kv_clusters=8, top_p=0.6,
                            clusters="separate", refresh_every=2)
    ds.apply_sparse_attention(model, config)
    kw = dict(batch=2, frames=5, height=8, width=12)
    cond = run_wan(model, timestep=900.0, **kw)
    run_wan(model, timestep=900.0, seed=7, **kw)  # the unconditional call of the same step
    state = get_state(model)
    keys = semantic_keys(state)
    assert sorted({key[2] for key in keys}) == [0, 1] and len(keys) == 6
    for key in keys:
        assert key[4] == 2 and state.caches[key]["q_centroids"].shape == (2, 2, 4, 64)
        assert state.caches[key]["layout"].kv_indices.shape[:2] == (2, 2)
    c0 = state.caches[(0, 1, 0, (5, 4, 6), 2)]["k_centroids"]
    c1 = state.caches[(0, 1, 1, (5, 4, 6), 2)]["k_centroids"]
    assert not torch.equal(c0, c1)
    # Batch entries are clustered independently: entry 1 of the batch equals a batch-1 run of it.
    x = wan_inputs(**kw)
    ds.reset_sparse_state(model)
    with torch.no_grad():
        single = model(x["hidden_states"][1:], x["timestep"][1:], x["encoder_hidden_states"][1:], return_dict=False)[0]
    torch.testing.assert_close(cond[1:], single, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("fixed_blocks", [False, True])
def test_wan_end_to_end(fixed_blocks):
    model = tiny_wan()
    kw = dict(batch=2, frames=7, height=6, width=10)
    ref = run_wan(model, **kw)
    config = SemanticConfig(dense_steps=0, dense_layers=0, block_size=16, q_clusters=4, kv_clusters=8, top_p=1.0,
                            fixed_blocks=fixed_blocks)
    ds.apply_sparse_attention(model, config)
    assert get_state(model).pattern.fixed_blocks is fixed_blocks
    out = run_wan(model, **kw)
    s = ds.summary(model)
    assert s["sparse_calls"] == 3 and s["mean_density"] == pytest.approx(1.0) and s["backend"] == "reference"
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    ds.apply_sparse_attention(
        model,
        SemanticConfig(
            dense_steps=0, dense_layers=0, block_size=16, q_clusters=4, kv_clusters=8, top_p=0.5, min_kv_ratio=0.0
        ),
    )
    out = run_wan(model, **kw)
    assert torch.isfinite(out).all() and ds.summary(model)["mean_density"] < 1.0


def test_hunyuan_end_to_end():
    model = tiny_hunyuan()
    kw = dict(batch=2, valid=(6, 2), frames=3, height=6, width=10)
    with torch.no_grad():
        ref = model(**hunyuan_inputs(**kw))[0]
    ds.apply_sparse_attention(
        model, SemanticConfig(dense_steps=0, dense_layers=0, block_size=16, q_clusters=4, kv_clusters=8, top_p=1.0)
    )
    with torch.no_grad():
        out = model(**hunyuan_inputs(**kw))[0]
    s = ds.summary(model)
    assert s["sparse_calls"] == 4 and s["mean_density"] == pytest.approx(1.0)
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-5)
    ds.apply_sparse_attention(
        model,
        SemanticConfig(
            dense_steps=0, dense_layers=0, block_size=16, q_clusters=4, kv_clusters=8, top_p=0.5, min_kv_ratio=0.0
        ),
    )
    with torch.no_grad():
        out = model(**hunyuan_inputs(**kw))[0]
    assert torch.isfinite(out).all() and ds.summary(model)["mean_density"] < 1.0


# ------------------------------------------------------------------------------------ the "blocks" selection rule
@pytest.mark.parametrize("clusters", ["separate", "joint"])
def test_blocks_estimate_selects_exactly_its_block_pairs_by_brute_force(clusters):
    # The default rule: every query block's mean query against every key, summed per key block, top-p per row (the
    # joint clustering ranks the diagonal block first).
    geometry = VideoGeometry(13, 4, 6)
    length, d = geometry.num_tokens, 16
    q, k, v = clustered(1, 2, length, d, centers=6, seed=3)
    config = cfg(top_p=0.6, min_kv_ratio=0.0, clusters=clusters, estimate="blocks")
    layout = SemanticPattern(config).plan(q, k, geometry, {})
    check_layout(layout)
    n = 2
    qs = q.gather(2, layout.q_perm.unsqueeze(-1).expand(-1, -1, -1, d)).reshape(n, length, d)
    ks = k.gather(2, layout.kv_perm.unsqueeze(-1).expand(-1, -1, -1, d)).reshape(n, length, d)
    qst, kst = layout.q_block_starts.reshape(n, -1).tolist(), layout.kv_block_starts.reshape(n, -1).tolist()
    mask = layout.to_block_mask().reshape(n, len(qst[0]) - 1, len(kst[0]) - 1)
    for r in range(n):
        for i in range(len(qst[r]) - 1):
            if qst[r][i] == qst[r][i + 1]:
                assert not mask[r, i].any()  # padding pieces compute nothing
                continue
            mean_q = qs[r, qst[r][i]:qst[r][i + 1]].mean(0)
            p = torch.softmax(ks[r] @ mean_q / math.sqrt(d), -1)
            pieces = [(kst[r][j], kst[r][j + 1]) for j in range(len(kst[r]) - 1) if kst[r][j] < kst[r][j + 1]]
            mass = torch.tensor([float(p[a:b].sum()) for a, b in pieces])
            per_token = mass / torch.tensor([b - a for a, b in pieces], dtype=torch.float32)
            if clusters == "joint":
                per_token[pieces.index((qst[r][i], qst[r][i + 1]))] = float("inf")
            order = per_token.argsort(descending=True)
            before = mass[order].cumsum(0) - mass[order]
            expected = {pieces[j] for j, m in zip(order.tolist(), before.tolist()) if m < 0.6 - 1e-5}
            chosen = {(kst[r][j], kst[r][j + 1]) for j in mask[r, i].nonzero().flatten().tolist()}
            # Ties in per-token mass may order differently; all other blocks must agree.
            assert expected <= chosen and len(chosen - expected) <= 1, (r, i)



def test_joint_clusters_share_one_permutation_and_keep_the_diagonal():
    geometry = VideoGeometry(5, 6, 7)
    q, k, v = clustered(2, 3, geometry.num_tokens, 16, centers=5, seed=4)
    cache = {}
    layout = SemanticPattern(cfg(top_p=0.3, clusters="joint", min_kv_ratio=0.0)).plan(q, k, geometry, cache)
    check_layout(layout)
    assert torch.equal(layout.q_perm, layout.kv_perm) and torch.equal(layout.q_block_starts, layout.kv_block_starts)
    assert "qk_centroids" in cache and cache["qk_centroids"].shape == (2, 3, 13, 32)  # k-means on [q, k]
    mask = layout.to_block_mask()
    nonempty = (layout.q_block_starts[..., 1:] > layout.q_block_starts[..., :-1])
    assert torch.equal(mask.diagonal(dim1=-2, dim2=-1), nonempty)  # every query block keeps its own keys
    assert float(layout.density()) < 0.9
    dense = SemanticPattern(cfg(top_p=1.0, clusters="joint")).plan(q, k, geometry, {})
    torch.testing.assert_close(block_sparse_attention(q, k, v, dense, backend="reference"), dense_attention(q, k, v),
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("clusters", ["joint", "separate"])
def test_kv_block_size_cuts_cluster_pieces_into_finer_key_pieces(clusters):
    # Query pieces of at most 32 tokens, key pieces of at most 16: joint, key pieces 2i and 2i + 1 are query piece
    # i's own tokens (its diagonal, always kept); separate, key clusters are cut at 16. top_p 1.0 is dense.
    geometry = VideoGeometry(5, 6, 7)
    q, k, v = clustered(2, 3, geometry.num_tokens, 16, centers=5, seed=4)
    sem = cfg(top_p=0.3, clusters=clusters, min_kv_ratio=0.0, block_size=32, kv_block_size=16)
    layout = SemanticPattern(sem).plan(q, k, geometry, {})
    check_layout(layout)
    assert layout.block_q == 32 and layout.block_kv == 16
    qs, ks = layout.q_block_starts, layout.kv_block_starts
    assert int((ks[..., 1:] - ks[..., :-1]).max()) == 16
    if clusters == "joint":
        assert ks.shape[-1] - 1 == 2 * (qs.shape[-1] - 1)
        assert torch.equal(ks[..., ::2], qs)  # every query piece starts a pair of key pieces
        mask = layout.to_block_mask()
        k_sizes = ks[..., 1:] - ks[..., :-1]
        own = (torch.arange(mask.shape[-1]) // 2).view(1, 1, 1, -1) == torch.arange(mask.shape[-2]).view(1, 1, -1, 1)
        assert bool(mask[own & (k_sizes > 0).unsqueeze(-2)].all())
    assert float(layout.density()) < 0.9
    full = cfg(top_p=1.0, clusters=clusters, block_size=32, kv_block_size=16)
    dense = SemanticPattern(full).plan(q, k, geometry, {})
    torch.testing.assert_close(block_sparse_attention(q, k, v, dense, backend="reference"), dense_attention(q, k, v),
                               atol=1e-5, rtol=1e-5)


def test_min_cluster_tokens_cuts_the_cluster_count_without_a_warning(caplog):
    geometry = VideoGeometry(5, 6, 7)  # 210 tokens
    q, k, _ = clustered(1, 2, geometry.num_tokens, 16, centers=5, seed=4)
    cache = {}
    with caplog.at_level(logging.WARNING, logger="dit_sparse.patterns.semantic"):
        SemanticPattern(cfg(clusters="joint", kv_clusters=13, min_cluster_tokens=64)).plan(q, k, geometry, cache)
    assert cache["qk_centroids"].shape[2] == 210 // 64 and "using" not in caplog.text


def test_centroid_estimate_needs_separate_clusters():
    with pytest.raises(ValueError, match="clusters='separate'"):
        SemanticConfig(estimate="centroids")
    SemanticConfig(estimate="centroids", clusters="separate")


def test_fixed_blocks_pack_each_clusters_whole_blocks_first():
    """With fixed blocks, each cluster's whole blocks come first and only the clusters' remainders share blocks: a
    cluster that is not a multiple of the block size must not push every later cluster off the block grid."""
    geometry = VideoGeometry(5, 6, 7)  # 210 tokens
    q, k, v = clustered(1, 2, geometry.num_tokens, 16, centers=3, seed=5)
    config = SemanticConfig(kv_clusters=3, block_size=16, kmeans_iters=10, top_p=0.5, fixed_blocks=True)
    pattern = SemanticPattern(config)
    layout = pattern.plan(q, k, geometry, {})
    assert layout.kind == "fixed" and torch.equal(layout.q_perm, layout.kv_perm)
    labels, _, counts = SemanticPattern(config).cluster(torch.cat([q, k], -1), 3, {}, "qk")  # the same cold start
    packed = labels.gather(2, layout.q_perm)  # cluster of every position of the packed order
    whole = (counts.long() // 16 * 16).sum(-1)  # tokens in whole blocks, per (batch, head)
    assert (counts.long() % 16 != 0).any()  # the case that needs packing
    for h in range(2):
        n = int(whole[0, h])
        head = packed[0, h, :n].view(-1, 16)
        assert (head == head[:, :1]).all()  # every whole block holds one cluster
        blocks = packed[0, h].split(16)
        mixed = sum(int(b.unique().numel() > 1) for b in blocks)
        assert mixed <= len(counts[0, h])  # only the tail's few blocks mix clusters
    full = SemanticPattern(SemanticConfig(kv_clusters=3, block_size=16, top_p=1.0, fixed_blocks=True))
    torch.testing.assert_close(block_sparse_attention(q, k, v, full.plan(q, k, geometry, {}), backend="reference"),
                               dense_attention(q, k, v), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("device_rows", [1, 3])
def test_segment_means_match_per_block_means_with_empty_blocks(device_rows):
    from dit_sparse.patterns.block_mass import segment_means

    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 50, 8, generator=g)
    starts = torch.tensor([[0, 10, 10, 25, 50], [0, 1, 2, 3, 50], [0, 0, 0, 49, 50]])[:device_rows]
    means = segment_means(x, starts, 16)
    for r in range(3):
        s = starts[min(r, device_rows - 1)].tolist()
        for i in range(4):
            want = x[r, s[i]:s[i + 1]].mean(0) if s[i + 1] > s[i] else torch.zeros(8)
            torch.testing.assert_close(means[r, i], want, atol=1e-6, rtol=1e-5)
    fixed = segment_means(x, None, 16)  # fixed blocks, the last one ragged
    torch.testing.assert_close(fixed[:, 3], x[:, 48:].mean(1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("device_rows", [1, 4])
def test_segment_means_through_an_order_match_the_permuted_copy(dtype, device_rows):
    """Block means of tokens read through a permutation (semantic's pooled estimate, q and k in token order): the
    Triton pass (CUDA default, here under the interpreter) against gathering the permuted copy first, on a strided
    view of Diffusers' (B, L, H, D) memory, with empty blocks and padding blocks at the end."""
    pytest.importorskip("triton")
    from dit_sparse.patterns.block_mass import segment_means

    g = torch.Generator().manual_seed(1)
    b, length, h, d = 1, 90, 4, 32
    x = torch.randn(b, length, h, d, generator=g).to(dtype).transpose(1, 2).reshape(b * h, length, d)  # a view
    assert not x.is_contiguous()
    order = torch.stack([torch.randperm(length, generator=g) for _ in range(b * h)])
    starts = torch.tensor([[0, 7, 7, 40, 41, 90, 90], [0, 32, 64, 80, 90, 90, 90], [0, 0, 1, 2, 3, 90, 90],
                           [0, 45, 45, 45, 46, 90, 90]])[:device_rows]
    want = segment_means(x, starts, 32, order=order, engine="torch")
    by_hand = x.gather(1, order.unsqueeze(-1).expand(-1, -1, d))
    torch.testing.assert_close(want, segment_means(by_hand, starts, 32))  # torch: the permuted copy, as before
    got = segment_means(x, starts, 32, order=order, engine="triton")
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert (got[:, -1] == 0).all() and got.abs().sum() > 0  # the padding block is empty: a zero mean
    with pytest.raises(ValueError, match="engine"):
        segment_means(x, starts, 32, order=order, engine="cuda")


def test_ordered_means_only_from_their_size_up(monkeypatch):
    """"auto" reads through the order by the Triton pass on CUDA from ``ORDERED_MEANS_MIN_ROWS`` rows (batch x heads
    x tokens) up: below that the packing is bound by launches and the gather + scatter-add measured faster (Wan-1.3B
    480p). The module switch turns it off at every size."""
    from dit_sparse.patterns import block_mass

    rows = block_mass.ORDERED_MEANS_MIN_ROWS
    assert 12 * 32760 < rows <= 12 * 75600  # Wan-1.3B: 480p gathers, 720p reads through the order
    assert block_mass.use_ordered_means(rows, True) and block_mass.use_ordered_means(40 * 75600, True)
    assert not block_mass.use_ordered_means(rows - 1, True) and not block_mass.use_ordered_means(rows, False)
    # A (q, k) pair (semantic's joint plan) reads through the order at any size, Wan-1.3B 480p included.
    assert block_mass.use_ordered_means(12 * 32760, True, pair=True)
    assert not block_mass.use_ordered_means(12 * 32760, False, pair=True)
    monkeypatch.setattr(block_mass, "ORDERED_MEANS_KERNEL", False)
    assert not block_mass.use_ordered_means(40 * 75600, True)
    assert not block_mass.use_ordered_means(40 * 75600, True, pair=True)


@pytest.mark.parametrize("diagonal", [False, True])
def test_finer_key_pieces_come_from_the_key_clusters_or_the_query_pieces(diagonal):
    """``kv_block_size`` below ``block_size``: with separate clusters the key pieces cut the key clusters; with one
    permutation (joint, the diagonal) they cut the query pieces, so query piece i holds key pieces 2i and 2i+1."""
    from dit_sparse.patterns.semantic import block_plan, cluster_order, cluster_pieces, max_pieces, split_pieces

    torch.manual_seed(4)
    n, length, d = 2, 150, 32
    q, k = torch.randn(n, length, d), torch.randn(n, length, d)
    q_labels, k_labels = torch.randint(0, 5, (n, length)), torch.randint(0, 9, (n, length))
    q_counts = torch.zeros(n, 5).scatter_add_(1, q_labels, torch.ones(n, length))
    k_counts = torch.zeros(n, 9).scatter_add_(1, k_labels, torch.ones(n, length))
    _, _, q_starts, kv_starts, _ = block_plan.fn(q, k, cluster_order(q_labels, 5), cluster_order(k_labels, 9),
                                                 q_counts, k_counts, 32, False, "pooled", 0.5, 0.0, diagonal, 16)
    want = split_pieces(q_starts, 2, 16) if diagonal else cluster_pieces(k_counts, 16, max_pieces(length, 9, 16),
                                                                          length)[0]
    assert torch.equal(kv_starts, want)


@pytest.mark.parametrize("fixed_blocks,cluster_sums", [(False, False), (True, False), (False, True)])
def test_block_plan_compiles_as_one_graph_and_matches_eager(fixed_blocks, cluster_sums):
    """On the GPU the block selection of a semantic plan runs compiled (`compiled_planning`, fullgraph): a graph break
    in it would fail there. Traced on the CPU with an eager backend, the result must equal eager (with the clusters'
    sums of a joint plan too)."""
    from dit_sparse.patterns.semantic import block_plan, cluster_order

    torch._dynamo.reset()
    torch.manual_seed(3)
    n, length, d, kc = 4, 150, 32, 7
    q, k = torch.randn(n, length, d), torch.randn(n, length, d)
    labels = torch.randint(0, kc, (n, length))
    perm = cluster_order(labels, kc)
    counts = torch.zeros(n, kc).scatter_add_(1, labels, torch.ones(n, length))
    args = (q, k, perm, perm, counts, counts, 16, fixed_blocks, "pooled", 0.5, 0.0, True, None, cluster_sums)
    eager = block_plan.fn(*args)
    assert (eager[4] is not None) == cluster_sums
    compiled = torch.compile(block_plan.fn, backend="aot_eager", fullgraph=True, dynamic=False)(*args)
    for a, b in zip(eager, compiled):
        assert (a is None and b is None) or torch.equal(a, b)
    assert int(eager[1].sum()) > 0


# ---------------------------------------------------------------------------------------------------- fused means
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_kmeans_without_its_last_update_returns_the_centroids_it_assigned_to(monkeypatch, backend):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    torch.manual_seed(2)
    x = (torch.randn(2, 120, 16), torch.randn(2, 120, 16))
    init = batched_kmeans(x, 6, 3, backend=backend)[1]
    full = batched_kmeans(x, 6, 1, init=init, backend=backend)
    labels, cent, counts = batched_kmeans(x, 6, 1, init=init, backend=backend, update_last=False)
    assert torch.equal(labels, full[0]) and torch.equal(counts, full[2]) and torch.equal(cent, init)
    # Cold, several iterations: all but the last update, so the labels are those of the full run's last assignment.
    four = batched_kmeans(x, 6, 4, backend=backend)
    labels3, cent3, _ = batched_kmeans(x, 6, 4, backend=backend, update_last=False)
    assert torch.equal(labels3, four[0])
    torch.testing.assert_close(cent3, batched_kmeans(x, 6, 3, backend=backend)[1], atol=1e-5, rtol=0)


def test_block_sums_of_a_pair_are_the_sums_of_the_joined_rows(monkeypatch):
    from dit_sparse.patterns.block_mass import block_sums

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    torch.manual_seed(3)
    n, length = 2, 150
    q, k = torch.randn(n, length, 16).half(), torch.randn(n, length, 16).half()
    order = torch.stack([torch.randperm(length) for _ in range(n)])
    starts = torch.tensor([[0, 7, 7, 40, 128, 150]] * n, dtype=torch.int32)  # an empty block too
    want = block_sums(torch.cat([q, k], -1), starts, 32, order=order, engine="torch")
    joined = torch.cat([q, k], -1).float().gather(1, order.unsqueeze(-1).expand(-1, -1, 32))
    torch.testing.assert_close(want[:, 1], torch.zeros(n, 32))
    torch.testing.assert_close(want[:, 3], joined[:, 40:128].sum(1), atol=1e-4, rtol=1e-5)
    for engine in ("torch", "triton"):
        torch.testing.assert_close(block_sums((q, k), starts, 32, order=order, engine=engine), want, atol=1e-4,
                                   rtol=1e-5)


@pytest.mark.parametrize("pack_pieces,kv_block_size,order", [(False, None, "label"), (True, None, "label"),
                                                              (True, 16, "label"), (True, None, "similarity")])
def test_joint_plans_take_the_cluster_means_from_the_piece_sums(monkeypatch, pack_pieces, kv_block_size, order):
    """A joint plan with the pooled estimate leaves k-means' last update out and stores its clusters' means from the
    [q, k] sums of its pieces (one pass over q and k fewer per plan): plan after plan (cold, then warm starts from what
    the previous plan stored), the stored centroids must be the means of the clusters the plan assigned, and (in label
    order: the similarity rank of a cold start is now taken before the last update) the layouts and centroids those of
    the plan with the update."""
    geometry = VideoGeometry(6, 8, 10)  # 480 tokens
    q, k, _ = clustered(1, 2, geometry.num_tokens, 16, centers=6, seed=8, spread=0.8)
    config = cfg(clusters="joint", kv_clusters=10, block_size=32, kv_block_size=kv_block_size, top_p=0.6,
                 kmeans_iters=4, warm_iters=1, pack_pieces=pack_pieces, cluster_order=order)
    calls = []
    kmeans_fn = semantic.batched_kmeans
    monkeypatch.setattr(semantic, "batched_kmeans", lambda *a, **kw: calls.append(kw["update_last"]) or
                        kmeans_fn(*a, **kw))
    runs = {}
    for fused in (True, False):
        monkeypatch.setattr(semantic, "FUSED_CLUSTER_SUMS", fused)
        cache, runs[fused] = {}, []
        for step in range(3):
            drift = 0.3 * step * torch.randn(q.shape, generator=torch.Generator().manual_seed(step))
            before = cache.get("qk_centroids")
            layout = SemanticPattern(config).plan(q + drift, k + drift, geometry, cache)
            runs[fused].append((layout, cache["qk_centroids"].clone()))
            if before is not None:  # warm, one iteration: the means of the clusters of the previous centroids
                points = torch.cat([q + drift, k + drift], -1).flatten(0, 1)
                labels = assign_clusters(points, before.flatten(0, 1))
                sums = torch.zeros(2, 10, 32).scatter_add_(1, labels.unsqueeze(-1).expand(-1, -1, 32), points)
                counts = torch.zeros(2, 10).scatter_add_(1, labels, torch.ones(labels.shape)).unsqueeze(-1)
                want = torch.where(counts > 0, sums / counts.clamp(min=1), before.flatten(0, 1))
                torch.testing.assert_close(cache["qk_centroids"].flatten(0, 1), want, atol=1e-5, rtol=1e-5)
    assert calls == [False] * 3 + [True] * 3
    if order != "label":
        return
    for (got, got_c), (want, want_c) in zip(runs[True], runs[False]):
        assert torch.equal(got.kv_counts, want.kv_counts) and torch.equal(got.kv_indices, want.kv_indices)
        assert torch.equal(got.q_perm, want.q_perm)
        torch.testing.assert_close(got_c, want_c, atol=1e-5, rtol=1e-5)
