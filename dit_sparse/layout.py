"""BlockLayout: which key blocks each query block computes, as packed index lists.

The layout never holds an L x L tensor. ``kv_indices[b, h, i, :kv_counts[b, h, i]]`` are the key blocks that query
block ``i`` attends to, in increasing order (kernels rely on it: the sequence's short last block, if listed, comes
last, so only that one is masked); entries past the count are padding (their value is ignored, we keep them in
range so a kernel may prefetch them safely). This is the form FlashAttention-4 (``full_block_cnt/idx``), FlexAttention
(``kv_num_blocks/kv_indices``) and our Triton kernel consume without conversion.

Blocks are fixed-size (``block_q`` / ``block_kv`` tokens, the last one ragged) unless ``q_block_starts`` /
``kv_block_starts`` are given: then block ``i`` spans tokens ``[starts[..., i], starts[..., i + 1])`` and no block is
longer than ``block_q`` / ``block_kv`` (variable-size, cluster-aligned blocks of the semantic pattern).

A layout may carry token permutations (``q_perm``, ``kv_perm``, [B, H, L] or [B, 1, L]): then the block lists refer
to the permuted sequence ``x.gather(2, perm)``, and the front door scatters the output back to the original order.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Tuple

import torch


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def block_sizes(length: int, block: int, device=None) -> torch.Tensor:
    """Tokens in each of the ``cdiv(length, block)`` fixed blocks of a sequence (the last one ragged), float32 [N]."""
    n = cdiv(length, block)
    sizes = torch.full((n,), float(block), device=device)
    sizes[-1] = length - block * (n - 1)
    return sizes


def inverse_permutation(order: torch.Tensor) -> torch.Tensor:
    """The permutation that undoes ``order`` (1-D): ``x[order][inverse_permutation(order)] == x``, and
    ``inverse_permutation(pos)`` is the order that puts token i at position ``pos[i]``."""
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel(), device=order.device, dtype=order.dtype)
    return inverse


def whole_blocks_first(group: torch.Tensor, block: int, counts: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The order that packs a grouped sequence into fixed ``block`` blocks with as few mixed blocks as possible.

    ``group`` (int [..., L]) labels consecutive runs of a sequence (tiles, or clusters sorted together). Every group
    of n tokens gives its first ``n // block * block`` tokens as whole blocks, which come first (in group order); the
    remainders of all groups follow, in group order, and only they share blocks with other groups. Without this, one
    short group shifts every later group off the block grid, so that almost every block mixes two groups.

    ``counts`` (int or float [..., K], optional): when ``group`` is sorted labels in [0, K) (clusters in label order)
    and ``counts`` their sizes, the runs are read from the counts (no scan over the tokens; the same order).

    Returns the int64 positions [..., L] to gather the grouped sequence by (a stable sort, no host sync).
    """
    length = group.shape[-1]
    pos = torch.arange(length, device=group.device)
    if counts is not None:
        sizes = counts.long()
        label = group.long()
        rank = pos - (sizes.cumsum(-1) - sizes).gather(-1, label)  # place inside the token's cluster
        remainder = rank >= (sizes // block * block).gather(-1, label)
        return torch.sort(remainder.to(torch.uint8), dim=-1, stable=True).indices
    new_run = torch.ones_like(group, dtype=torch.bool)
    new_run[..., 1:] = group[..., 1:] != group[..., :-1]
    # Start of each token's run (cummax of run starts), its rank inside the run, and the run's length.
    run_start = torch.where(new_run, pos, torch.zeros_like(pos)).cummax(-1).values
    rank = pos - run_start
    run_id = new_run.long().cumsum(-1) - 1
    run_len = torch.zeros_like(run_id).scatter_add_(-1, run_id, torch.ones_like(run_id)).gather(-1, run_id)
    remainder = rank >= run_len // block * block
    return torch.sort(remainder.to(torch.uint8), dim=-1, stable=True).indices


def pack_block_mask(mask: torch.Tensor, kmax: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """A bool mask [..., M] as left-aligned indices int32 [..., kmax] (kept entries in increasing order, padding
    entries repeating the last valid index, 0 for empty rows, so they stay in range) and counts int32 [...], with no
    host read (a cumulative sum and a scatter, no sort).

    ``kmax`` (default M) must not be below any row's count (a row would lose entries); it is clamped to [1, M].
    """
    m = mask.shape[-1]
    kmax = m if kmax is None else max(1, min(int(kmax), m))
    counts = mask.sum(-1, dtype=torch.int32)
    pos = mask.long().cumsum(-1) - 1
    target = torch.where(mask, pos, torch.full_like(pos, m))  # unselected entries go to a dump column
    src = torch.arange(m, device=mask.device).expand_as(pos)
    idx = torch.zeros(*mask.shape[:-1], m + 1, dtype=torch.long, device=mask.device).scatter_(-1, target, src)
    idx = idx[..., :kmax]
    last = idx.gather(-1, (counts.long() - 1).clamp(min=0).unsqueeze(-1))
    idx = torch.where(torch.arange(idx.shape[-1], device=mask.device) < counts.unsqueeze(-1), idx, last)
    return idx.to(torch.int32).contiguous(), counts.contiguous()


@dataclasses.dataclass
class BlockLayout:
    """Block-sparse attention layout as packed per-row index lists.

    Args:
        kv_indices (`torch.Tensor` int32 [B, H, Nq, Kmax]): selected key blocks per query block, packed left.
        kv_counts (`torch.Tensor` int32 [B, H, Nq]): how many entries of ``kv_indices`` are valid.
        block_q (`int`): query block size (the maximum size when ``q_block_starts`` is given).
        block_kv (`int`): key block size (the maximum size when ``kv_block_starts`` is given).
        seq_len_q (`int`): number of query tokens.
        seq_len_kv (`int`): number of key tokens.
        q_block_starts / kv_block_starts (`torch.Tensor` int32 [B or 1, H or 1, N + 1], optional): variable block
            boundaries; the last entry equals the sequence length.
        q_perm / kv_perm (`torch.Tensor` int64 [B or 1, H or 1, L], optional): token permutation applied before the
            kernel (the block lists index the permuted sequence).
        kv_valid_len (`torch.Tensor` int32 [B], optional): keys at positions ``>= kv_valid_len[b]`` are masked out
            (HunyuanVideo's text padding, which always sits at the end of the joint sequence).
    """

    kv_indices: torch.Tensor
    kv_counts: torch.Tensor
    block_q: int
    block_kv: int
    seq_len_q: int
    seq_len_kv: int
    q_block_starts: Optional[torch.Tensor] = None
    kv_block_starts: Optional[torch.Tensor] = None
    q_perm: Optional[torch.Tensor] = None
    kv_perm: Optional[torch.Tensor] = None
    kv_valid_len: Optional[torch.Tensor] = None
    # Values derived from the layout once and reused while it lives (its density, a backend's own block tensors).
    # They live and die with the layout, which SparseState owns; ``to()`` does not carry them to the new device.
    memo: Dict[str, Any] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        if self.kv_indices.dim() != 4:
            raise ValueError(f"kv_indices must be [B, H, Nq, Kmax], got shape {tuple(self.kv_indices.shape)}")
        if self.kv_counts.shape != self.kv_indices.shape[:3]:
            raise ValueError(
                f"kv_counts shape {tuple(self.kv_counts.shape)} must equal kv_indices.shape[:3] "
                f"{tuple(self.kv_indices.shape[:3])}"
            )
        if self.block_q <= 0 or self.block_kv <= 0:
            raise ValueError(f"block sizes must be positive, got block_q={self.block_q}, block_kv={self.block_kv}")
        if self.q_block_starts is None and self.num_q_blocks != cdiv(self.seq_len_q, self.block_q):
            raise ValueError(
                f"layout has {self.num_q_blocks} query blocks but seq_len_q={self.seq_len_q} "
                f"with block_q={self.block_q} "
                f"needs {cdiv(self.seq_len_q, self.block_q)}"
            )

    # ------------------------------------------------------------------ shape helpers
    @property
    def num_q_blocks(self) -> int:
        return self.kv_indices.shape[2]

    @property
    def num_kv_blocks(self) -> int:
        if self.kv_block_starts is not None:
            return self.kv_block_starts.shape[-1] - 1
        return cdiv(self.seq_len_kv, self.block_kv)

    @property
    def batch_size(self) -> int:
        return self.kv_indices.shape[0]

    @property
    def num_heads(self) -> int:
        return self.kv_indices.shape[1]

    @property
    def is_variable(self) -> bool:
        return self.q_block_starts is not None or self.kv_block_starts is not None

    @property
    def has_permutation(self) -> bool:
        return self.q_perm is not None or self.kv_perm is not None

    @property
    def kind(self) -> str:
        """A short tag for backend selection: 'variable' blocks, 'masked' (fixed blocks with ``kv_valid_len``) or
        'fixed'."""
        if self.is_variable:
            return "variable"
        return "masked" if self.kv_valid_len is not None else "fixed"

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_block_mask(
        cls,
        mask: torch.Tensor,
        block_q: int,
        block_kv: int,
        seq_len_q: int,
        seq_len_kv: int,
        kmax: Optional[int] = None,
        **extra,
    ) -> "BlockLayout":
        """Packs a boolean block mask [B, H, Nq, Nk] into index lists (vectorised, no host sync but the Kmax size).

        Args:
            mask (`torch.Tensor` bool [B, H, Nq, Nk]): ``mask[b, h, i, j]`` keeps key block j for query block i.
            block_q, block_kv (`int`): block sizes in tokens.
            seq_len_q, seq_len_kv (`int`): sequence lengths in tokens.
            kmax (`int`, optional): width of ``kv_indices`` when the caller knows a bound on every row's count (a
                pattern with a fixed per-row budget): then nothing is read back from the device. It must not be below
                any row's count (a row would lose blocks); `None` = read the largest count (one host sync).

        Returns:
            `BlockLayout` whose ``kv_indices`` lists the kept blocks of each row in increasing order.
        """
        if mask.dim() != 4:
            raise ValueError(f"mask must be a bool tensor [B, H, Nq, Nk] of blocks, got shape {tuple(mask.shape)}")
        if mask.dtype != torch.bool:
            mask = mask != 0
        nk = mask.shape[-1]
        if extra.get("kv_block_starts") is None and nk != cdiv(seq_len_kv, block_kv):
            raise ValueError(
                f"mask has {nk} key blocks but seq_len_kv={seq_len_kv} with block_kv={block_kv} needs "
                f"{cdiv(seq_len_kv, block_kv)}"
            )
        if kmax is None:
            # Kmax is static for the kernels' shapes; one host read here is on the pattern's slow path, not per
            # kernel.
            kmax = max(int(mask.sum(-1).max().item()) if mask.numel() else 0, 1)
        indices, counts = pack_block_mask(mask, kmax)
        return cls(indices, counts, block_q, block_kv, seq_len_q, seq_len_kv, **extra)

    @classmethod
    def dense(
        cls,
        batch: int,
        heads: int,
        seq_len_q: int,
        seq_len_kv: int,
        block_q: int = 128,
        block_kv: int = 128,
        device=None,
    ) -> "BlockLayout":
        """Layout that computes every block (equals dense attention)."""
        nq, nk = cdiv(seq_len_q, block_q), cdiv(seq_len_kv, block_kv)
        idx = torch.arange(nk, device=device, dtype=torch.int32).expand(batch, heads, nq, nk).contiguous()
        cnt = torch.full((batch, heads, nq), nk, device=device, dtype=torch.int32)
        return cls(idx, cnt, block_q, block_kv, seq_len_q, seq_len_kv)

    # ------------------------------------------------------------------ conversions and statistics
    def to_block_mask(self) -> torch.Tensor:
        """The boolean block mask [B, H, Nq, Nk] (for tests and plots; small: blocks, not tokens)."""
        b, h, nq, kmax = self.kv_indices.shape
        mask = torch.zeros(b, h, nq, self.num_kv_blocks + 1, dtype=torch.bool, device=self.kv_indices.device)
        valid = torch.arange(kmax, device=mask.device) < self.kv_counts.unsqueeze(-1)
        idx = torch.where(valid, self.kv_indices.long(), torch.full_like(self.kv_indices.long(), self.num_kv_blocks))
        mask.scatter_(-1, idx, True)
        return mask[..., :-1]

    def density(self) -> torch.Tensor:
        """Fraction of key blocks computed, averaged over batch, heads and query blocks (a 0-dim tensor, no sync).

        For variable-size blocks the fraction is token-weighted (query tokens x key tokens computed / L_q x L_kv).
        """
        if not self.is_variable:
            return self.kv_counts.float().mean() / max(self.num_kv_blocks, 1)
        kv_sizes = self._block_sizes(self.kv_block_starts, self.seq_len_kv, self.block_kv, self.num_kv_blocks)
        q_sizes = self._block_sizes(self.q_block_starts, self.seq_len_q, self.block_q, self.num_q_blocks)
        b, h = self.kv_indices.shape[:2]
        kv_sizes = kv_sizes.expand(b, h, -1)
        valid = torch.arange(self.kv_indices.shape[-1], device=self.kv_indices.device) < self.kv_counts.unsqueeze(-1)
        picked = kv_sizes.gather(-1, self.kv_indices.long().flatten(2)).view_as(self.kv_indices) * valid
        per_row = picked.sum(-1).float()  # keys per query block
        total = (per_row * q_sizes.expand(b, h, -1)).sum((-1,)) / (self.seq_len_q * self.seq_len_kv)
        return total.mean()

    def _block_sizes(self, starts, seq_len, block, n) -> torch.Tensor:
        if starts is not None:
            return (starts[..., 1:] - starts[..., :-1]).float()
        return block_sizes(seq_len, block, self.kv_indices.device).view(1, 1, n)

    def without_permutation(self) -> "BlockLayout":
        """The same blocks over a sequence that is already in this layout's token order (the step hook orders the
        image tokens once per transformer call, `Pattern.token_order`). Shares ``memo``: density and a backend's block
        tensors depend on the blocks, not on the order."""
        if not self.has_permutation:
            return self
        return dataclasses.replace(self, q_perm=None, kv_perm=None)

    def compact(self) -> "BlockLayout":
        """This layout in less memory, to keep between denoising steps (``refresh_every`` > 1): ``kv_indices`` as
        int16 where the key blocks fit, permutations as int32 (half of draft's ~23 MB per layer and branch at
        HunyuanVideo 720p). Kernels take `expanded` again. Only the memoised density is carried."""
        small = torch.int16 if self.num_kv_blocks <= torch.iinfo(torch.int16).max else self.kv_indices.dtype
        return self._with_dtypes(small, torch.int32)

    def expanded(self) -> "BlockLayout":
        """The kernels' dtypes again (int32 ``kv_indices``, int64 permutations) after `compact`; no copy of a tensor
        that has them already."""
        return self._with_dtypes(torch.int32, torch.int64)

    def _with_dtypes(self, index_dtype: torch.dtype, perm_dtype: torch.dtype) -> "BlockLayout":
        if self.kv_indices.dtype == index_dtype and all(
            p is None or p.dtype == perm_dtype for p in (self.q_perm, self.kv_perm)
        ):
            return self
        q_perm = None if self.q_perm is None else self.q_perm.to(perm_dtype)
        # Joint orders (semantic's one clustering of queries and keys) stay one tensor.
        kv_perm = q_perm if self.kv_perm is self.q_perm else (
            None if self.kv_perm is None else self.kv_perm.to(perm_dtype))
        out = dataclasses.replace(self, kv_indices=self.kv_indices.to(index_dtype), q_perm=q_perm, kv_perm=kv_perm,
                                  memo={})
        if "density" in self.memo:
            out.memo["density"] = self.memo["density"]
        return out

    def to(self, device) -> "BlockLayout":
        fields = {}
        for f in dataclasses.fields(self):
            if f.name == "memo":
                continue
            val = getattr(self, f.name)
            fields[f.name] = val.to(device) if isinstance(val, torch.Tensor) else val
        return BlockLayout(**fields)

    def validate(self) -> None:
        """Checks index ranges (host sync; for tests and debugging, not the hot path)."""
        nk = self.num_kv_blocks
        if (self.kv_counts < 0).any() or (self.kv_counts > nk).any():
            raise ValueError(f"kv_counts must be in [0, {nk}]")
        if (self.kv_indices < 0).any() or (self.kv_indices >= max(nk, 1)).any():
            raise ValueError(f"kv_indices must be in [0, {nk})")
        pos = torch.arange(self.kv_indices.shape[-1], device=self.kv_indices.device)
        listed = pos[1:] < self.kv_counts.unsqueeze(-1)
        if (listed & (self.kv_indices[..., 1:] <= self.kv_indices[..., :-1])).any():
            raise ValueError("kv_indices must be strictly increasing within each row; build layouts with "
                             "BlockLayout.from_block_mask")


@dataclasses.dataclass
class PaddedTiles:
    """A layout of variable blocks as whole tiles of a padded sequence, for fixed-tile kernels (FlashAttention-4).

    Block ``i`` of the layout (at most ``tile`` tokens) fills slots ``[i * tile, i * tile + len_i)`` of a sequence of
    ``num_blocks * tile`` slots; the rest of its tile is padding. A kernel then runs the layout's own block lists on
    whole tiles, so the selection stays exactly the layout's: padding query slots compute rows nobody reads, and
    padding key slots (and keys ``kv_valid_len`` masks) are masked out by ``key_ok``. Only the key tiles that hold
    such slots need the mask; the lists are split so that the others run unmasked.

    Fields (all with the batch and heads of the inputs, ``B`` and ``H``):
        q_src / kv_src (int64 [B, H, Nq * tile_q] / [B, H, Nk * tile_kv]): the input token (original order: the
            layout's permutation folded in) each slot reads; padding slots read their block's first token, so that
            every slot holds finite values.
        q_slot (int64 [B, H, Lq]): the slot of every query token (where its output row is read from).
        key_ok (int32 [B, H, Nk * tile_kv]): 1 for a slot that holds a key the layout computes, else 0.
        full_indices / full_counts, partial_indices / partial_counts (int32 [B, H, Nq, Kmax] / [B, H, Nq]): each row's
            listed key tiles that hold only valid keys, and those with masked slots, in list order, packed left.
    """

    q_src: torch.Tensor
    kv_src: torch.Tensor
    q_slot: torch.Tensor
    key_ok: torch.Tensor
    full_indices: torch.Tensor
    full_counts: torch.Tensor
    partial_indices: torch.Tensor
    partial_counts: torch.Tensor
    tile_q: int
    tile_kv: int


def _tile_slots(starts: Optional[torch.Tensor], n: int, tile: int, length: int, device) -> Tuple[torch.Tensor, ...]:
    """Position (in the layout's sequence) each slot of ``n`` tiles reads, and whether it holds a token."""
    if starts is None:
        starts = (torch.arange(n + 1, device=device) * tile).clamp(max=length).view(1, 1, -1)
    starts = starts.long()
    first, lens = starts[..., :-1], starts[..., 1:] - starts[..., :-1]
    r = torch.arange(tile, device=device)
    ok = r < lens.unsqueeze(-1)
    # An empty block starts at `length`: its padding reads the last token instead.
    src = torch.where(ok, first.unsqueeze(-1) + r, first.clamp(max=length - 1).unsqueeze(-1))
    return src.flatten(-2), ok.flatten(-2)


def _compact_lists(indices: torch.Tensor, keep: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The entries of ``indices`` where ``keep``, packed left in their order (padding 0), and their counts."""
    kmax = indices.shape[-1]
    counts = keep.sum(-1, dtype=torch.int32)
    pos = torch.where(keep, keep.long().cumsum(-1) - 1, torch.full_like(indices, kmax, dtype=torch.long))
    packed = torch.zeros(*indices.shape[:-1], kmax + 1, dtype=indices.dtype, device=indices.device)
    packed.scatter_(-1, pos, indices)
    return packed[..., :kmax].contiguous(), counts.contiguous()


def pad_to_tiles(layout: "BlockLayout", batch: int, heads: int) -> PaddedTiles:
    """`PaddedTiles` of ``layout`` for inputs of ``batch`` x ``heads`` (tensor work only, no host read)."""
    device = layout.kv_indices.device
    tq, tk = layout.block_q, layout.block_kv
    nq, nk = layout.num_q_blocks, layout.num_kv_blocks
    lq, lk = layout.seq_len_q, layout.seq_len_kv

    def original(src, perm, length):
        src = src.expand(batch, heads, -1)
        return src if perm is None else perm.long().expand(batch, heads, length).gather(-1, src)

    q_pos, q_ok = _tile_slots(layout.q_block_starts, nq, tq, lq, device)
    kv_pos, kv_ok = _tile_slots(layout.kv_block_starts, nk, tk, lk, device)
    q_src, kv_src = original(q_pos, layout.q_perm, lq), original(kv_pos, layout.kv_perm, lk)
    slots = torch.arange(q_src.shape[-1], device=device).expand(batch, heads, -1)
    q_ok = q_ok.expand(batch, heads, -1)
    q_slot = torch.zeros(batch, heads, lq + 1, dtype=torch.long, device=device)
    q_slot.scatter_(-1, torch.where(q_ok, q_src, torch.full_like(q_src, lq)), slots)
    key_ok = kv_ok.expand(batch, heads, -1)
    if layout.kv_valid_len is not None:
        # Positions of the layout's sequence at or past the batch row's valid length are masked.
        valid = layout.kv_valid_len.long().view(-1, 1, 1).expand(batch, 1, 1)
        key_ok = key_ok & (kv_pos.expand(batch, heads, -1) < valid)
    tile_partial = ~key_ok.reshape(batch, heads, nk, tk).all(-1)
    idx = layout.kv_indices.expand(batch, heads, -1, -1).to(torch.int32)
    listed = torch.arange(idx.shape[-1], device=device) < layout.kv_counts.expand(batch, heads, -1).unsqueeze(-1)
    partial = tile_partial.gather(-1, idx.long().flatten(2)).view_as(idx)
    full_idx, full_cnt = _compact_lists(idx, listed & ~partial)
    part_idx, part_cnt = _compact_lists(idx, listed & partial)
    return PaddedTiles(q_src.contiguous(), kv_src.contiguous(), q_slot[..., :lq].contiguous(),
                       key_ok.to(torch.int32).contiguous(), full_idx, full_cnt, part_idx, part_cnt, tq, tk)
