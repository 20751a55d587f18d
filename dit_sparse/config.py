"""Configuration dataclasses: one per method, sharing the schedule fields.

Every config validates itself on construction and raises ``ValueError`` naming the field and the allowed range, so a
typo fails at ``apply_sparse_attention`` time rather than twenty minutes into a generation. Configs are read-only once
constructed: a field set afterwards would skip that validation, so a changed copy is made with
``dataclasses.replace(cfg, field=value)``, which validates again.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import ClassVar, Dict, Optional, Tuple, Type, Union

BACKEND_NAMES = ("auto", "fa4", "triton", "flex", "reference")

_OFF_VALUES = ("0", "false", "no", "off")


def env_flag(name: str, default: bool) -> bool:
    """The on/off environment variable ``name`` (the package's ``DIT_SPARSE_*`` switches): unset or empty gives
    ``default``; "0", "false", "no", "off" (any case) give False; anything else True."""
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    return value not in _OFF_VALUES

# ``min_sparse_tokens=None`` on a CUDA device: below this many video tokens a call runs dense. ComfyUI's sparse
# attention node uses this threshold; measured for ours on an H200 (``python -m dit_sparse.eval.bench crossover``,
# Wan 480p frames, 12 heads, ``2026-12-02_NVIDIA-H200_crossover-wan-frame.json``): radial and draft (planning
# compiled) are 1.27x / 1.38x dense SDPA at 12,480 tokens and slower at 7,800 (0.86x / 0.48x), so the threshold
# holds for both. Semantic (density ~0.25, Triton) was slower than dense at every size up to 32,760 tokens (0.60x).
AUTO_MIN_SPARSE_TOKENS_CUDA = 12288


def _check_range(name: str, value, lo=None, hi=None, lo_open=False, hi_open=False, kind=(int, float)):
    left = "(" if lo_open else "["
    right = ")" if hi_open else "]"
    rng = f"{left}{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}{right}"
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ValueError(f"{name} must be a number, got {value!r}")
    # NaN compares False with every bound, so the range test below would let it through.
    if not math.isfinite(value):
        raise ValueError(f"{name}={value!r} is not a finite number; give a number in {rng}")
    lo_bad = lo is not None and (value <= lo if lo_open else value < lo)
    hi_bad = hi is not None and (value >= hi if hi_open else value > hi)
    if lo_bad or hi_bad:
        raise ValueError(f"{name}={value!r} is out of range; allowed: {rng}")


def _check_bool(name: str, value, allow_none: bool = False):
    # A non-empty string or 0/1 would silently act as a flag ("no" is truthy): only real booleans are accepted.
    if value is None and allow_none:
        return
    if not isinstance(value, bool):
        allowed = "True, False or None (the default)" if allow_none else "True or False"
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


class FrozenConfigError(dataclasses.FrozenInstanceError, ValueError):
    """A field of a constructed config was assigned; the message gives the ``dataclasses.replace`` call to use."""


def _check_int(name: str, value, lo: int, hi: Optional[int] = None):
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
    _check_range(name, value, lo, hi)


@dataclass
class SparseConfig:
    """Schedule and kernel settings shared by every method.

    Args:
        dense_steps (`int` or `float`, defaults to 0.2):
            The first denoising steps run dense attention, because early steps set the layout of the video. An int
            is a number of steps; a float in [0, 1] is a fraction of the run's steps (it needs the scheduler: pass the
            pipeline to `apply_sparse_attention`, or use an int).
        dense_layers (`int`, defaults to 1): the first N transformer blocks always run dense.
        refresh_every (`int`, defaults to 1): dynamic patterns are recomputed every N sparse steps and reused from a
            cache in between (1 = recomputed every step). Static patterns (radial) ignore it.
        backend (`str`, defaults to "auto"): kernel engine, "auto" | "fa4" | "triton" | "flex" | "reference".
        block_size (`int`, defaults to 128): tokens per query and key block.
        min_sparse_tokens (`int`, optional): calls with fewer video tokens run dense attention, where block
            sparsity does not pay for its planning and kernel overhead; `summary()` says so (``"dense_fallback"``)
            and one warning is logged. `None` = automatic: 12,288 on CUDA devices (ComfyUI's threshold, to be
            re-measured per backend), 0 elsewhere (the CPU reference kernel is for tests and small models that run
            sparse on purpose). 0 = always sparse.
        fast_dense (`bool`, defaults to False): dense steps and layers run FlashAttention-4 through our kernel front
            door (exact attention, every block listed) where it can run them, instead of Diffusers' attention (used
            where it cannot, and always when False: then dense steps match stock Diffusers bit for bit). Worth it
            where Diffusers' default is slow: HunyuanVideo passes its text mask to SDPA, and its 720p dense step took
            7.88 s that way against 5.37 s on FA4 (H200, 15 of 60 blocks,
            ``2026-12-02_NVIDIA-H200_step-hunyuan-720p-dense-variants.json``); Wan's 15 % with its q and k from the
            fused prologue (``...step-wan1.3b-480p-fa4-full-fused-prologue.json``).
        share_cfg_layouts (`bool`, defaults to False): the calls of one denoising step after its first (the
            unconditional CFG branch of Wan's two transformer calls per step) reuse the layout the first call planned
            instead of planning their own: half the planning of a CFG run, for one kept layout per layer (the memory
            of ``refresh_every=2``). Dynamic patterns only; needs the calls to share a grid and batch size (else each
            plans as usual). Draft, whose compiled plan is cheap, plans every call inside a compiled graph.
    """

    method: ClassVar[str] = "base"

    dense_steps: Union[int, float] = 0.2
    dense_layers: int = 1
    refresh_every: int = 1
    backend: str = "auto"
    block_size: int = 128
    min_sparse_tokens: Optional[int] = None
    fast_dense: bool = False
    share_cfg_layouts: bool = False

    def __post_init__(self):
        self.validate()
        # Read-only from here on (validate() may still normalise fields above). Not a frozen dataclass, so that a
        # subclass's validate() can normalise its own fields the same way.
        object.__setattr__(self, "_constructed", True)

    def __setattr__(self, name, value):
        if getattr(self, "_constructed", False):
            raise FrozenConfigError(
                f"{type(self).__name__}.{name} cannot be changed after construction (the new value would not be "
                f"validated); make a validated copy instead: dataclasses.replace(config, {name}={value!r})"
            )
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        if getattr(self, "_constructed", False):
            raise FrozenConfigError(f"{type(self).__name__}.{name} cannot be deleted: configs are read-only")
        object.__delattr__(self, name)

    def validate(self) -> None:
        ds = self.dense_steps
        if isinstance(ds, bool) or not isinstance(ds, (int, float)):
            raise ValueError(f"dense_steps must be an int >= 0 or a float in [0, 1], got {ds!r}")
        if isinstance(ds, float):
            _check_range("dense_steps", ds, 0.0, 1.0)
        else:
            _check_int("dense_steps", ds, 0)
        _check_int("dense_layers", self.dense_layers, 0)
        _check_int("refresh_every", self.refresh_every, 1)
        if self.backend not in BACKEND_NAMES:
            raise ValueError(f"backend={self.backend!r} is not known; allowed: {', '.join(BACKEND_NAMES)}")
        _check_int("block_size", self.block_size, 16, 1024)
        if self.block_size & (self.block_size - 1):
            raise ValueError(f"block_size={self.block_size} must be a power of two in [16, 1024] (64 or 128 are fast)")
        if self.min_sparse_tokens is not None:
            _check_int("min_sparse_tokens", self.min_sparse_tokens, 0)
        _check_bool("fast_dense", self.fast_dense)
        _check_bool("share_cfg_layouts", self.share_cfg_layouts)

    def resolve_min_sparse_tokens(self, device) -> int:
        """The video token count below which a call on ``device`` runs dense (``min_sparse_tokens``, or its
        automatic value for the device's type)."""
        if self.min_sparse_tokens is not None:
            return self.min_sparse_tokens
        device_type = getattr(device, "type", str(device).split(":")[0])
        return AUTO_MIN_SPARSE_TOKENS_CUDA if device_type == "cuda" else 0

    def resolve_dense_steps(self, total_steps: Optional[int]) -> int:
        """Number of dense steps for a run of ``total_steps`` steps."""
        if isinstance(self.dense_steps, int):
            return self.dense_steps
        if total_steps is None:
            raise ValueError(
                f"dense_steps={self.dense_steps} is a fraction of the run's steps, but the step count is unknown: "
                "pass the pipeline (not only its transformer) to apply_sparse_attention, call "
                "dit_sparse.set_num_inference_steps(transformer, n), or give dense_steps as an int"
            )
        return int(round(self.dense_steps * total_steps))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["method"] = self.method
        return d


@dataclass
class DenseConfig(SparseConfig):
    """Dense attention through our processors (the exact counterpart of every sparse method)."""

    method: ClassVar[str] = "dense"


@dataclass
class RadialConfig(SparseConfig):
    """Radial Attention: a static spatio-temporal energy-decay block mask, O(n log n).

    Args:
        decay (`float`, optional): scales the spatial windows of far frame pairs (larger is denser). `None` = the
            model's default, as in the reference scripts: 0.2 for Wan, 0.95 for HunyuanVideo.
        sink (`bool`, optional): every query also attends the first frame (attention sink). `None` = the model's
            default (on for Wan, off for HunyuanVideo).
        spatial (`str`, defaults to "raster"): how in-frame distance is measured: "raster" (flattened index, as the
            published code) or "2d" (Chebyshev distance on the height x width grid with the window's equal area).
    """

    method: ClassVar[str] = "radial"

    decay: Optional[float] = None
    sink: Optional[bool] = None
    spatial: str = "raster"

    def validate(self) -> None:
        super().validate()
        if self.decay is not None:
            _check_range("decay", self.decay, 0.0, 16.0, lo_open=True)
        _check_bool("sink", self.sink, allow_none=True)
        if self.spatial not in ("raster", "2d"):
            raise ValueError(f"spatial={self.spatial!r} is not known; allowed: 'raster', '2d'")


@dataclass
class SemanticConfig(SparseConfig):
    """Sparse VideoGen2's semantic-aware permutation: k-means on q and k, top-p selection of cluster pairs.

    Args:
        top_p (`float`, defaults to 0.9): per query cluster, key clusters are kept until their attention mass
            reaches ``top_p`` (in (0, 1]; 1.0 = dense).
        q_clusters (`int`, defaults to 100): number of query clusters per (batch, head).
        kv_clusters (`int`, defaults to 500): number of key clusters per (batch, head).
        min_kv_ratio (`float`, defaults to 0.1): keep at least this fraction of key clusters per query cluster.
        kmeans_iters (`int`, defaults to 20): k-means iterations on the first call (cold start).
        warm_iters (`int`, defaults to 2): iterations when warm-started from the cached centroids of the last step.
        kmeans_sample (`int`, defaults to 1): a warm-started k-means' iterations before the last fit the centroids
            on every n-th token only (the last one assigns and averages every token, so clusters and centroids stay
            exact means of a full assignment; the cold start uses every token); 1 = every token. At ``warm_iters=2``
            a plan's k-means then does ~(1 + 1/n) / 2 of its work (k-means was 7.5 of a 10.1 ms packed plan at
            HunyuanVideo 720p). Needs ``warm_iters >= 2``. The video presets take ``warm_iters=1`` instead, which
            saved more and cost less video (``pipelines/presets.py``).
        clusters (`str`, defaults to "joint"): "joint": one k-means of every token's [q, k] (``kv_clusters``
            clusters; ``q_clusters`` unused) and one permutation for queries and keys, so each query block keeps the
            key block of its own tokens (the diagonal). "separate": Sparse VideoGen 2's separate query and key
            clusterings. Gain against the oracle (``python -m dit_sparse.eval.oracle``) at density 0.25: joint 1.99
            vs separate -4.50 on photographic attention (``bench/results/oracle-photo.json``: separate permutations
            leave queries whose own neighbourhood falls outside every selected key block), 1.54 vs 1.10 on tiny's
            captured attention (``oracle-tiny-variants.json``). "balanced": one partition of every token's [q, k]
            into groups of exactly ``block_size`` similar tokens (recursive principal-axis bisection,
            `dit_sparse.patterns.partition`; ``q_clusters`` / ``kv_clusters`` unused); the groups are the blocks, so
            the layout is fixed-block (FlashAttention-4 runs it with ``block_size=128``) and computes exactly the
            selected group pairs. It chooses less well than k-means clusters (gain 1.26 vs 1.57 at density 0.25 on
            tiny's attention, ``oracle-tiny-balanced.json``) but runs at fixed-layout speed: one Wan-1.3B 480p step
            at density 0.25 planned every 4th step 1.50x dense vs 0.90x for 64-token k-means pieces; 0.84 / 0.90 of
            the fixed random yardstick at Wan-1.3B / HunyuanVideo 720p
            (``...step-{wan1.3b-480p,hunyuan-720p}-balanced.json``). Its quality on the trained small model is far
            below k-means': 21.8 dB vs 30.8 against dense video at density ~0.46 (68 groups of 128 tokens there;
            ``quality-small-balanced-cpu.json``), so no preset uses it yet.
        estimate (`str`, defaults to "pooled"): how the attention mass of a block pair is estimated. "pooled": each
            query block's mean query against each key block's mean key (cheap: blocks x blocks). "blocks": the mean
            query against every key exactly, summed per key block (1 / block_size of dense attention's score FLOPs;
            a little closer to the oracle: gain 2.09 vs 1.99 on photographic and 1.57 vs 1.54 on tiny's attention at
            density 0.25, ``oracle-photo.json`` / ``oracle-tiny-variants.json``). Both select per query block, top-p.
            "centroids": Sparse VideoGen 2's query-centroid x key-centroid softmax weighted by cluster sizes, top-p per
            query cluster (the published method; needs ``clusters="separate"``).
        fixed_blocks (`bool`, defaults to False): fixed ``block_size`` blocks over the permuted sequence (fixed-block
            kernels such as FlashAttention-4 run them) instead of variable-size cluster-aligned blocks.
        cluster_order (`str`, defaults to "label"): with ``fixed_blocks`` or ``pack_pieces``, the order of the
            clusters in the permuted sequence: "label" (k-means' labels) or "similarity" (a k-d-tree order of the
            centroids, so that the cluster remainders sharing a block are similar).
        keep_cluster_order (`bool`, defaults to True): with ``cluster_order="similarity"``, compute the clusters'
            order when k-means starts cold and keep it while k-means is warm-started from the last plan's centroids
            (the clusters keep their identity from plan to plan; any order is a valid layout, a stale one only packs
            less similar remainders together). The order (a k-d tree: some 90 small batched matmuls and the kernels
            between them) took 6.8 ms of a 7.9 ms packed plan at Wan-1.3B 480p on an H200
            (``2026-12-03_NVIDIA-H200_profile-semantic-packed-plan.json``). False recomputes it in every plan.
        pack_pieces (`bool`, defaults to False): run the cluster pieces (selected as with variable blocks) as fixed
            ``block_size`` blocks that hold whole pieces: every cluster's full pieces are whole blocks, the clusters'
            remainder pieces are packed several to a block (in ``cluster_order``), and a block pair is computed when
            any piece in one selected any piece in the other (a cover of the selection: every query keeps what its
            piece selected, and more; the layout's density counts what is computed). FlashAttention-4 runs it on
            full tiles. With ``kv_block_size``, pieces are selected as 128 / 64 pieces are and key blocks hold
            ``kv_block_size`` tokens (fewer pieces share a key block).
        static_kmax (`bool`, optional): size the layout's index lists by their static bound (every key block)
            instead of one host read of the largest count: no host synchronisation (CUDA graphs,
            ``torch.compile(fullgraph=True)``, and no idle GPU after the read), at the price of memory. `None` (the
            default) keeps the static width while the lists are small (at most
            ``semantic.STATIC_KMAX_MAX_ENTRIES`` entries: Wan 480p yes, 720p no) and reads the width above.
        block_size (`int`, defaults to 64): longest block. Clusters of Sparse VideoGen 2's size (~65 tokens at Wan
            480p with 500 clusters) cut into pieces of at most 64 tokens fill the kernel's tiles better than pieces
            of at most 128: one Wan-1.3B 480p step (all layers sparse, H200) took 1.44 s instead of 1.72 s
            (``2026-12-02_NVIDIA-H200_step-wan1.3b-480p.json``), and on the trained small model PSNR vs dense was
            31.09 dB instead of 30.76 (``quality-small-block64-refresh.json``). Fixed blocks
            (``fixed_blocks=True``) on FlashAttention-4 want 128.
        kv_block_size (`int`, optional): key blocks of this many tokens (a divisor of ``block_size``, at least 16)
            inside query blocks of ``block_size``: queries keep whole ``block_size`` blocks (full kernel tiles) while
            keys are chosen at a finer grain, as Sparse VideoGen 2 clusters keys several times finer than queries.
            With cluster pieces (``clusters="joint"``), every query piece is cut into ``block_size / kv_block_size``
            key pieces (the last ones shorter or empty), so that its own tokens stay its diagonal; with
            ``clusters="separate"`` key clusters are cut into pieces of ``kv_block_size``; with
            ``clusters="balanced"`` each group is split into finer key groups. `None` = ``block_size``.
            FlashAttention-4 runs 128 / 64 as fast as 128 / 128 on an H200, 128 / 32 at 0.73 of it; on the trained
            small model balanced 128 / 32 gave 22.9 dB against dense video where 128 / 128 gave 21.8 and k-means
            semantic 30.8 (``quality-small-balanced-kvblock-cpu.json``).
        min_cluster_tokens (`int`, defaults to 16): fewest tokens per cluster on average: the cluster counts are cut
            to at most one per this many tokens. Larger clusters cut into pieces of ``block_size`` leave fewer short
            pieces, whose kernel tiles run partly empty (see the README's "Semantic on FlashAttention-4").
    """

    method: ClassVar[str] = "semantic"

    block_size: int = 64

    top_p: float = 0.9
    q_clusters: int = 100
    kv_clusters: int = 500
    min_kv_ratio: float = 0.1
    kmeans_iters: int = 20
    warm_iters: int = 2
    kmeans_sample: int = 1
    clusters: str = "joint"
    estimate: str = "pooled"
    fixed_blocks: bool = False
    cluster_order: str = "label"
    keep_cluster_order: bool = True
    pack_pieces: bool = False
    static_kmax: Optional[bool] = None
    kv_block_size: Optional[int] = None
    min_cluster_tokens: int = 16

    def validate(self) -> None:
        super().validate()
        _check_range("top_p", self.top_p, 0.0, 1.0, lo_open=True)
        _check_int("min_cluster_tokens", self.min_cluster_tokens, 1)
        _check_int("q_clusters", self.q_clusters, 1)
        _check_int("kv_clusters", self.kv_clusters, 1)
        _check_range("min_kv_ratio", self.min_kv_ratio, 0.0, 1.0)
        _check_int("kmeans_iters", self.kmeans_iters, 1)
        _check_int("warm_iters", self.warm_iters, 0)
        _check_int("kmeans_sample", self.kmeans_sample, 1)
        if self.kmeans_sample > 1 and self.warm_iters < 2:
            # The sample fits the warm iterations before the last; with one (or none) there are none to sample, and
            # the option would do nothing (the presets run warm_iters=1 since session 21).
            raise ValueError(f"kmeans_sample={self.kmeans_sample} samples the warm k-means iterations before the last "
                             f"and warm_iters={self.warm_iters} has none; set warm_iters >= 2 or kmeans_sample=1")
        if self.clusters not in ("joint", "separate", "balanced"):
            raise ValueError(f"clusters={self.clusters!r} is not known; allowed: 'joint', 'separate', 'balanced'")
        if self.estimate not in ("blocks", "pooled", "centroids"):
            raise ValueError(f"estimate={self.estimate!r} is not known; allowed: 'blocks', 'pooled', 'centroids'")
        if self.estimate == "centroids" and self.clusters != "separate":
            raise ValueError(
                "estimate='centroids' scores query clusters against key clusters and needs clusters='separate' "
                "(Sparse VideoGen 2's published method: SemanticConfig(clusters='separate', estimate='centroids'))"
            )
        _check_bool("fixed_blocks", self.fixed_blocks)
        if self.cluster_order not in ("label", "similarity"):
            raise ValueError(f"cluster_order={self.cluster_order!r} is not known; allowed: 'label', 'similarity'")
        _check_bool("keep_cluster_order", self.keep_cluster_order)
        _check_bool("pack_pieces", self.pack_pieces)
        if self.pack_pieces and (self.clusters != "joint" or self.estimate not in ("pooled", "blocks")):
            raise ValueError(
                "pack_pieces packs joint clusters' pieces into fixed blocks and needs clusters='joint' and "
                "estimate='pooled' or 'blocks'"
            )
        _check_bool("static_kmax", self.static_kmax, allow_none=True)
        if self.kv_block_size is not None:
            _check_int("kv_block_size", self.kv_block_size, 16)
            if self.block_size % self.kv_block_size:
                raise ValueError(
                    f"kv_block_size={self.kv_block_size} must divide block_size={self.block_size} (key blocks split "
                    "each query block); e.g. block_size=128 with kv_block_size=32 or 64"
                )
            if self.estimate == "centroids":
                raise ValueError(
                    "kv_block_size cuts blocks that estimate='centroids' does not select (it keeps whole clusters); "
                    "drop kv_block_size or use estimate='pooled'"
                )

    @property
    def key_block_size(self) -> int:
        """Tokens per key block: ``kv_block_size``, or ``block_size`` when it is not set."""
        return self.block_size if self.kv_block_size is None else self.kv_block_size


@dataclass
class DraftConfig(SparseConfig):
    """DraftAttention: a low-resolution pooled attention map chooses the key blocks.

    Args:
        density (`float`, defaults to 0.25): fraction of key blocks computed per query block, in (0, 1].
        pool (`tuple[int, int]`, optional): pooled tile (height, width) in tokens; `None` = one tile per block of
            tokens (8 x 16 for 128-token blocks).
        global_budget (`bool`, defaults to False): select the top blocks per head over the whole map instead of per
            query block (the diagonal block is kept either way).
        estimate (`str`, defaults to "pooled"): how a tile pair's attention is scored. "pooled": mean query against
            mean key, as the published DraftAttention. "blocks": the mean query of every query tile against every
            key exactly, summed per key tile (`dit_sparse.patterns.block_mass`): closer to the oracle on
            photographic attention (gain 1.22 vs 0.91 at density 0.25, ``oracle-photo.json``), equal on tiny's (1.07,
            ``oracle-tiny-variants.json``), but its first version planned in 16.7 ms vs 8.1 ms of sparse attention
            per call at Wan 1.3B 480p on an H200 (``2026-12-01_NVIDIA-H200_pattern-wan1.3b-480p.json``).
        blocks (`str`, defaults to "fixed"): what a kernel block is. "fixed": ``block_size`` consecutive tokens of
            the tile order (tile after tile), so every block is full and every kernel (FlashAttention-4 included)
            runs the layout; where the grid does not divide into whole tiles a block may join the ends of two edge
            tiles. "tiles": one block per tile, as published; partial edge tiles make the blocks variable-size,
            which only the Triton and reference kernels run. Both are the same layout when the tiles are whole.
    """

    method: ClassVar[str] = "draft"

    density: float = 0.25
    pool: Optional[Tuple[int, int]] = None
    global_budget: bool = False
    estimate: str = "pooled"
    blocks: str = "fixed"

    def validate(self) -> None:
        super().validate()
        _check_range("density", self.density, 0.0, 1.0, lo_open=True)
        if self.pool is not None:
            if (
                not isinstance(self.pool, (tuple, list))
                or len(self.pool) != 2
                or not all(isinstance(p, int) and not isinstance(p, bool) and p >= 1 for p in self.pool)
            ):
                raise ValueError(f"pool must be a pair of positive ints (height, width) or None, got {self.pool!r}")
            self.pool = tuple(self.pool)
        _check_bool("global_budget", self.global_budget)
        if self.estimate not in ("blocks", "pooled"):
            raise ValueError(f"estimate={self.estimate!r} is not known; allowed: 'blocks', 'pooled'")
        if self.blocks not in ("fixed", "tiles"):
            raise ValueError(f"blocks={self.blocks!r} is not known; allowed: 'fixed', 'tiles'")


def _check_triple(name: str, value, lo: int = 1) -> Tuple[int, int, int]:
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 3
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= lo for v in value)
    ):
        raise ValueError(f"{name} must be three ints >= {lo} (frames, height, width), got {value!r}")
    return tuple(value)


# A tile window this many tiles long covers every tile of its axis in any grid we run: ``window=(EVERY_TILE, 3, 3)``
# is "every frame, 3 x 3 tiles around the query" whatever the video's length.
EVERY_TILE = 1 << 12


@dataclass
class TileConfig(SparseConfig):
    """Tile-neighbourhood attention (Sliding Tile Attention, generalized neighborhood attention): tokens are grouped
    into 3-D tiles, one tile per kernel block, and each query tile attends the key tiles around it. Static: built once
    per token grid. An image is a video of one frame.

    Args:
        tile (`tuple[int, int, int]`, optional): tile (frames, height, width) in tokens, at most ``block_size``
            tokens (edge tiles may be partial); `None` = one frame of ``8 x 16`` tokens for 128-token blocks (the
            draft pattern's tile, ``(1, 8, 8)`` for 64).
        window (`tuple[int, int, int]`, defaults to (3, 3, 3)): neighbourhood in tiles per axis (frames, height,
            width), centred on the query tile and shifted inward at the borders (as NATTEN), so every query tile sees
            the same number of tiles where the grid allows. A window at least as large as the grid is dense;
            ``EVERY_TILE`` on an axis covers all of it. The default is Sliding Tile Attention's cube; on our trained
            video models a window over every frame and narrow in space chooses far better (the video presets'
            ``(EVERY_TILE, 3, 3)``; the cube is worse than random blocks there, ``oracle-small-tile.json``).
        dilation (`tuple[int, int, int]`, defaults to (1, 1, 1)): per axis, the window takes every ``dilation``-th
            tile (tiles of the same residue modulo the dilation, as NATTEN's dilated neighbourhoods).
        stride (`tuple[int, int, int]`, defaults to (1, 1, 1)): per axis, groups of ``stride`` query tiles share the
            window of the group's centre (generalized neighborhood attention's stride); at most ``window``.
        global_frames (`int`, defaults to 0): every query also attends the key tiles holding the first
            ``global_frames`` frames (an attention sink; 1 = Wan's first-frame sink).
        blocks (`str`, defaults to "tiles"): what a kernel block is where the grid does not divide into whole tiles.
            "tiles": one block per tile; partial edge tiles make the blocks variable-size, which only the Triton and
            reference kernels run, and the layout is exactly the token-level neighbourhood. "fixed": ``block_size``
            consecutive tokens with whole tiles first and the partial edge tiles packed after them (as draft's
            fixed blocks), so FlashAttention-4 runs it; a block that holds pieces of several edge tiles keeps every
            key block any of them needs (a superset of the neighbourhood for those tokens, never less). Both are the
            same layout when every tile is whole.
    """

    method: ClassVar[str] = "tile"

    tile: Optional[Tuple[int, int, int]] = None
    window: Tuple[int, int, int] = (3, 3, 3)
    dilation: Tuple[int, int, int] = (1, 1, 1)
    stride: Tuple[int, int, int] = (1, 1, 1)
    global_frames: int = 0
    blocks: str = "tiles"

    def validate(self) -> None:
        super().validate()
        if self.tile is not None:
            self.tile = _check_triple("tile", self.tile)
            volume = self.tile[0] * self.tile[1] * self.tile[2]
            if volume > self.block_size:
                raise ValueError(
                    f"tile={self.tile} has {volume} tokens, more than block_size={self.block_size}: a tile is one "
                    f"kernel block; use a tile of at most {self.block_size} tokens (as many as possible is fastest)"
                )
        self.window = _check_triple("window", self.window)
        self.dilation = _check_triple("dilation", self.dilation)
        self.stride = _check_triple("stride", self.stride)
        if any(s > w for s, w in zip(self.stride, self.window)):
            raise ValueError(
                f"stride={self.stride} must not exceed window={self.window} on any axis (a query tile would fall "
                "outside its group's window)"
            )
        _check_int("global_frames", self.global_frames, 0)
        if self.blocks not in ("fixed", "tiles"):
            raise ValueError(f"blocks={self.blocks!r} is not known; allowed: 'tiles', 'fixed'")


CONFIGS: Dict[str, Type[SparseConfig]] = {
    "dense": DenseConfig,
    "radial": RadialConfig,
    "semantic": SemanticConfig,
    "draft": DraftConfig,
    "tile": TileConfig,
}


def make_config(method: str, **options) -> SparseConfig:
    """Builds the config of ``method`` ("dense", "radial", "semantic", "draft", "tile") from keyword options.

    Args:
        method (`str`): the method name.
        **options: fields of that method's config (unknown fields raise `ValueError` listing the known ones).

    Returns:
        `SparseConfig`: the validated config.
    """
    if method not in CONFIGS:
        raise ValueError(f"unknown method {method!r}; known methods: {', '.join(CONFIGS)}")
    cls = CONFIGS[method]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(
            f"{cls.__name__} has no option(s) {', '.join(unknown)}; known options: {', '.join(sorted(known))}"
        )
    return cls(**options)
