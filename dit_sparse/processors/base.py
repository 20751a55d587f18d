"""The shared core of our attention processors: schedule decision, pattern, kernel, text tokens.

Model processors build q, k, v exactly as the stock Diffusers processor does and hand them here in Diffusers' layout
(B, L, H, D). Dense decisions go through ``dispatch_attention_fn`` (the user's attention backend and parallel config
apply). Sparse decisions run the pattern on the video tokens and our block-sparse kernel. Text tokens in joint
attention, after the video tokens (HunyuanVideo) or before them (``text_first``: Flux), stay dense in both directions:
video queries attend the text keys in a second, dense kernel call whose result is merged through the log-sum-exp, and
text queries attend every key.
"""

from __future__ import annotations

import functools
import logging
from typing import Optional

import torch
import torch.distributed as dist
from diffusers.models.attention_dispatch import dispatch_attention_fn

from ..kernels import available_backends, block_sparse_attention, resolve_backend
from ..layout import BlockLayout
from ..parallel import heads_to_seq, seq_to_heads, ulysses_group
from ..schedule import CACHED, DENSE, PLANNED_NOW, STATIC, PlanCache, SparseState

logger = logging.getLogger(__name__)

# Entries of a layer's cache that belong to the core, not to the pattern.
_OURS = ("layout", PLANNED_NOW, "planned_by")


def merge_attention(o1: torch.Tensor, lse1: torch.Tensor, o2: torch.Tensor, lse2: torch.Tensor):
    """Combines two attention results over disjoint key sets (B, H, L, D) with their LSEs [B, H, L]."""
    lse = torch.logaddexp(lse1, lse2)
    # Rows with no keys at all have lse = -inf in both; give them zeros rather than NaN.
    safe = torch.where(torch.isinf(lse), torch.zeros_like(lse), lse)
    w1 = torch.exp(lse1 - safe).unsqueeze(-1)
    w2 = torch.exp(lse2 - safe).unsqueeze(-1)
    out = o1.float() * w1 + o2.float() * w2
    return out.to(o1.dtype), lse


@torch.compiler.assume_constant_result
def _engine_runs(name: str, device: torch.device, dtype: torch.dtype, head_dim: int, kind: str, block: int) -> bool:
    """Whether engine ``name`` runs layouts of this kind and block (FlashAttention-4 for ``fast_dense``'s dense
    calls; the config's engine for padded text keys): asked once per kind, not per call. A constant to
    torch.compile: a memo dict read inside the graph would be guarded on and recompile the block once it fills."""
    return _engine_runs_cached(name, device, dtype, head_dim, kind, block)


@functools.lru_cache(maxsize=32)
def _engine_runs_cached(name: str, device: torch.device, dtype: torch.dtype, head_dim: int, kind: str,
                        block: int) -> bool:
    return available_backends(device, dtype, head_dim, kind, (block, block)).get(name) == "ok"


@functools.lru_cache(maxsize=16)
def _dense_layout(len_q: int, len_kv: int, block: int, device: torch.device) -> BlockLayout:
    # Built once per shape instead of in every joint-attention call of every layer and step.
    return BlockLayout.dense(1, 1, len_q, len_kv, block, block, device=device)


class SparseAttentionCore:
    """Decides, plans and computes one attention call for block ``layer`` of the transformer tagged ``model_index``."""

    def __init__(self, state: SparseState, layer: int, name: str, model_index: int = 0):
        self.state = state
        self.layer = layer
        self.name = name
        self.model_index = model_index
        self._warned = False
        # Set here, so a block compiled before any eager call does not compute it (and read ``layer``) in its graph.
        self._dense_layers_of = state.config
        self._dense_layer = layer < state.config.dense_layers
        # This layer's cache entries per kind of call, owned by the state (see `SparseState.layer_caches`).
        self._caches = state.layer_caches(model_index, layer)

    def _in_dense_layers(self) -> bool:
        # A boolean kept per config, not ``layer < dense_layers`` on every call: torch.compile guards on what it reads,
        # and a guard on the layer index would make compile_repeated_blocks compile every block anew.
        config = self.state.config
        if self._dense_layers_of is not config:
            self._dense_layer = self.layer < config.dense_layers
            self._dense_layers_of = config
        return self._dense_layer

    def __call__(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        *,
        attn_mask: Optional[torch.Tensor] = None,
        text_len: int = 0,
        text_first: bool = False,
        attention_backend=None,
        parallel_config=None,
    ) -> torch.Tensor:
        """Attention over the joint sequence (B, L, H, D): ``text_len`` text tokens after the video tokens, or before
        them when ``text_first`` (Flux's [text, image]); the pattern sees only the video tokens."""
        if self.state.geometry is None:
            raise RuntimeError(
                "dit_sparse processors need the step hook on the transformer to know the video geometry; use "
                "apply_sparse_attention(pipe, config) or transformer.set_attn_processor(sparse_attn_processors("
                "transformer, config)), which attach it"
            )
        ulysses = ulysses_group(parallel_config)
        if ulysses is None:
            return self._attend(query, key, value, attn_mask, text_len, text_first, attention_backend, parallel_config)
        if text_first and text_len:
            # Flux's own context-parallel plan shards the text tokens as well as the image tokens; the exchange below
            # assumes text replicated on every rank (HunyuanVideo's plan).
            raise ValueError(
                f"{self.name}: dit_sparse does not support context parallelism for models with the text tokens first "
                "(Flux) yet; run without enable_parallelism, or remove_sparse_attention to use Diffusers' own"
            )
        # Ulysses: video tokens arrive as this rank's sequence shard (all heads); text tokens, when present, are
        # replicated on every rank. Exchange to (all tokens, H/N heads), attend as one process would, exchange back.
        group, world = ulysses
        rank = dist.get_rank(group)
        local_video = query.shape[1] - text_len
        heads_local = query.shape[2] // world

        def gather(x):
            video = seq_to_heads(x[:, :local_video], group, world)
            if not text_len:
                return video
            text = x[:, local_video:, rank * heads_local : (rank + 1) * heads_local]
            return torch.cat([video, text], dim=1)

        out = self._attend(
            gather(query), gather(key), gather(value), attn_mask, text_len, False, attention_backend, None
        )
        video_out = heads_to_seq(out[:, : out.shape[1] - text_len].contiguous(), group, world)
        if not text_len:
            return video_out
        text_out = out[:, out.shape[1] - text_len :].contiguous()
        parts = [torch.empty_like(text_out) for _ in range(world)]
        dist.all_gather(parts, text_out, group=group)
        return torch.cat([video_out, torch.cat(parts, dim=2)], dim=1)

    def _attend(
        self, query, key, value, attn_mask, text_len, text_first, attention_backend, parallel_config
    ) -> torch.Tensor:
        state = self.state
        geometry = state.geometry
        video_len = query.shape[1] - text_len
        # The video and text spans of the joint sequence.
        video = slice(text_len, None) if text_first else slice(0, video_len)
        text = slice(0, text_len) if text_first else slice(video_len, None)
        static = bool(getattr(state.pattern, "static", False))
        dense_layer = self._in_dense_layers()
        decision = state.decide(self.layer, static, dense_layer=dense_layer)
        slot = None
        if decision not in (DENSE, STATIC) and (
            not torch.compiler.is_compiling() or state.layer_cache_needed(compiling=True)
        ):
            # Read the branch only for dynamic patterns: a compiled dense or static block then does not guard on it;
            # neither does a compiled dynamic one that keeps nothing per layer (draft with refresh_every=1): it plans
            # fresh on every call, as it does eagerly, where its entry is only the layout kept for a checkpointed
            # backward's recomputation (recomputing it there gives the same layout).
            slot = state.call_slot(self.model_index, query.shape[0])
            decision = state.decide(self.layer, static, self._caches.get(slot), dense_layer=dense_layer)
        if decision != DENSE and video_len != geometry.num_tokens:
            if not self._warned:
                logger.warning(
                    "%s: %d video tokens but the grid %s has %d; running dense", self.name, video_len, geometry.key,
                    geometry.num_tokens,
                )
                self._warned = True
            decision = DENSE
        dense_kernel = decision == DENSE and self._runs_own_kernel(decision, query, video_len)
        if decision == DENSE and not dense_kernel:
            state.record(self.name, True)
            return dispatch_attention_fn(
                query, key, value, attn_mask=attn_mask, dropout_p=0.0, is_causal=False,
                backend=attention_backend, parallel_config=parallel_config,
            )

        q = query.transpose(1, 2)
        k = key.transpose(1, 2)
        v = value.transpose(1, 2)
        qv, kv, vv = q[:, :, video], k[:, :, video], v[:, :, video]
        replay = False
        backend = state.config.backend
        if dense_kernel:
            # Exact attention on FlashAttention-4 (every block listed), text merged as on sparse calls below.
            layout, backend = _dense_layout(video_len, video_len, state.config.block_size, q.device), "fa4"
            state.record(self.name, True)
        elif decision == CACHED:
            entry = self._caches[slot]
            layout = entry["layout"].expanded()
            # Planned at this very step by this branch: a recomputation in backward (gradient checkpointing), not a
            # new call (another branch's plan of this step, ``share_cfg_layouts``, is a new call). Statistics are
            # not recorded in a compiled graph, so it is not read there (it would guard on the branch).
            replay = (not torch.compiler.is_compiling() and entry.get(PLANNED_NOW, False)
                      and entry.get("planned_by") == state.branch)
            if not self._keep(qv, kv):  # the last step that reads it (the next one refreshes)
                del entry["layout"]
                entry.pop(PLANNED_NOW, None)
        else:
            layout = self._plan(qv, kv, slot)
        if not dense_kernel:
            state.backend_used = resolve_backend(backend, q.device, q.dtype, q.shape[-1], layout.kind,
                                                 (layout.block_q, layout.block_kv))
        # Under torch.compile statistics are not recorded (``record`` returns), and the memo is not written either: a
        # mutation of the shared layout inside the graph would change the graph's guards for the next call.
        if not dense_kernel and not replay and not torch.compiler.is_compiling():
            density = layout.memo.get("density")
            if density is None:  # layouts are not modified after planning: one reduction per layout, not per call
                density = layout.memo["density"] = layout.density()
            state.record(self.name, False, density)

        if state.token_order is not None:
            # The step hook handed the tokens over in the layout's own order (`Pattern.token_order`): no gather and
            # scatter per call.
            layout = layout.without_permutation()
        if text_len == 0:
            return block_sparse_attention(qv, kv, vv, layout, backend=backend).transpose(1, 2)

        o_video, lse_video = block_sparse_attention(qv, kv, vv, layout, backend=backend, return_lse=True)
        text_valid = None
        k_text, v_text = k[:, :, text], v[:, :, text]
        if attn_mask is not None:
            # A key mask [B, 1, 1, L] (Diffusers' HunyuanVideo, Qwen-Image). The kernel takes the valid text keys as a
            # prefix of the text span: a stable sort puts them first, the identity for padding at the end (the usual
            # case) and exact for masks of any pattern (Qwen-Image accepts them). Only the video rows see the sorted
            # keys; the text rows below attend through the mask in the original order.
            valid = attn_mask.reshape(attn_mask.shape[0], -1)[:, text].bool()
            text_valid = valid.sum(-1, dtype=torch.int32)
            order = torch.argsort((~valid).to(torch.uint8), dim=1, stable=True)
            index = order[:, None, :, None].expand(k_text.shape[0], k_text.shape[1], -1, k_text.shape[-1])
            k_text, v_text = k_text.gather(2, index), v_text.gather(2, index)
        bs = state.config.block_size
        text_layout = _dense_layout(video_len, text_len, bs, q.device)
        # A fresh layout object per call (the valid lengths change); its index tensors are the cached ones.
        text_layout = BlockLayout(text_layout.kv_indices, text_layout.kv_counts, bs, bs, video_len, text_len,
                                  kv_valid_len=text_valid)
        # The config's engine, unless it cannot take padded text keys (FA4's adapter): then the automatic choice, so
        # that backend="fa4" runs the video part on FA4 instead of failing on the text part.
        text_backend = state.config.backend
        if text_backend != "auto" and not _engine_runs(text_backend, q.device, q.dtype, q.shape[-1], text_layout.kind,
                                                       bs):
            text_backend = "auto"
        o_text, lse_text = block_sparse_attention(
            qv, k_text, v_text, text_layout, backend=text_backend, return_lse=True
        )
        out_video, _ = merge_attention(o_video, lse_video, o_text, lse_text)
        out_text_rows = dispatch_attention_fn(
            query[:, text], key, value, attn_mask=attn_mask, dropout_p=0.0, is_causal=False,
            backend=attention_backend, parallel_config=None,
        )
        parts = [out_video.transpose(1, 2), out_text_rows.to(out_video.dtype)]
        return torch.cat(parts[::-1] if text_first else parts, dim=1)

    def runs_own_kernel(self, query: torch.Tensor, video_len: Optional[int] = None) -> bool:
        """Whether this call (q (B, L, H, D); its first ``video_len`` tokens, all by default, are the video's) runs
        our kernel: a sparse layout, or a dense step on FlashAttention-4 (``fast_dense``); not Diffusers' attention.
        The processors may then build q and k with fused kernels, since the output is not Diffusers' bit for bit
        anyway. Reads the schedule without changing it (the layer's cache entry only tells a fresh plan from a reused
        one, both sparse)."""
        static = bool(getattr(self.state.pattern, "static", False))
        decision = self.state.decide(self.layer, static, dense_layer=self._in_dense_layers())
        return self._runs_own_kernel(decision, query, query.shape[1] if video_len is None else video_len)

    def _runs_own_kernel(self, decision: str, query: torch.Tensor, video_len: int) -> bool:
        """Where a call of the schedule's ``decision`` goes: our kernel for sparse decisions on the geometry's video
        tokens, and for dense ones where ``fast_dense`` and FlashAttention-4 can run them; else Diffusers'
        attention."""
        state = self.state
        if state.geometry is None or video_len != state.geometry.num_tokens:
            return False
        if decision != DENSE:
            return True
        if not state.config.fast_dense:
            return False
        return _engine_runs("fa4", query.device, query.dtype, query.shape[-1], "fixed", state.config.block_size)

    def _keep(self, qv: torch.Tensor, kv: torch.Tensor) -> bool:
        """Whether a later call reads this call's layout: a later step (``refresh_every`` > 1), an inspection, or,
        under autograd, a recomputation of this layer in backward (gradient checkpointing) at this same step."""
        state = self.state
        recording = torch.is_grad_enabled() and (qv.requires_grad or kv.requires_grad)
        return state.keep_layouts or state.retain_layouts or recording

    def _plan(self, qv: torch.Tensor, kv: torch.Tensor, slot: Optional[tuple]) -> BlockLayout:
        """Plans a layout (static: shared per geometry; dynamic: with the layer's warm-start entries) and keeps it
        only when a later call reads it."""
        state = self.state
        entries = self._caches.get(slot, {}) if slot is not None else {}
        cache = PlanCache({k: v for k, v in entries.items() if k not in _OURS}, state.shared)
        # A layout is an index structure, not a function of q and k to differentiate: planning without autograd keeps
        # k-means out of the graph, and what the pattern caches for the next step holds no graph of this one.
        with torch.no_grad():
            layout = state.pattern.plan(qv, kv, state.geometry, cache)
        if slot is None:  # static: the pattern shares it through state.shared
            return layout
        entry = {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in cache.items()}
        if self._keep(qv, kv):
            entry["layout"] = layout.compact()  # kept in less memory until a later call reads it
            # Marked as this step's (a flag, not the step number: a compiled graph would guard on the number);
            # the step hook clears it when the step ends.
            entry[PLANNED_NOW] = True
            if not torch.compiler.is_compiling():
                entry["planned_by"] = state.branch
        if entry:
            self._caches[slot] = entry
        else:
            self._caches.pop(slot, None)
        return layout


__all__ = ["SparseAttentionCore", "merge_attention"]
