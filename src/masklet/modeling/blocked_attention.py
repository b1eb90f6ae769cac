"""Softmax attention whose values are narrower than its keys, computed block by block.

The memory cross-attention projects 64-wide memories to 256-wide values. Since every row
of the attention weights sums to one, ``softmax(q k^T) (m W_v^T + b_v)`` equals
``(softmax(q k^T) m) W_v^T + b_v``: attending over the raw memories and projecting the
few query rows afterwards does a quarter of the value work, which is a third of the
layer's attention arithmetic. The fused SDPA kernels require values as wide as the keys,
so this module runs the online-softmax ("flash") recurrence itself, one cache-sized block
of scores at a time, without ever holding the full [Nq, Nk] score matrix.

Float32 inference only: it overwrites its score blocks in place, and in reduced
precision its score blocks would be rounded, which the fused kernels avoid.
"""

from __future__ import annotations

import torch

# A [QUERY_BLOCK, KEY_BLOCK] float32 score block is 2 MB, one core's L2 cache: the matmul
# writes it and exp, sum and the value matmul read it from cache.
QUERY_BLOCK = 1024
KEY_BLOCK = 512


def blocked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v without materialising the scores.

    Args:
        q: [B or 1, heads, Nq, d] queries (batch 1 is shared by every key set).
        k: [B, heads, Nk, d] keys.
        v: [B, heads or 1, Nk, dv] values; dv may differ from d.
    Returns:
        [B, heads, Nq, dv]. All inputs share one dtype (float32), which is the output's.
    """
    batch, heads = k.shape[:2]
    out = q.new_empty(batch, heads, q.shape[-2], v.shape[-1])
    q = q * (q.shape[-1] ** -0.5)
    for b in range(batch):
        for h in range(heads):
            # One head at a time: 2-D matmuls into a reused block are the fastest CPU path.
            out[b, h] = _attend_2d(q[min(b, q.shape[0] - 1), h], k[b, h],
                                   v[b, min(h, v.shape[1] - 1)])
    return out


def _attend_2d(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """One head: q [Nq, d] (already scaled), k [Nk, d], v [Nk, dv] -> [Nq, dv]."""
    keys_t = k.t()
    out = q.new_empty(q.shape[0], v.shape[1])
    for start in range(0, q.shape[0], QUERY_BLOCK):
        rows = slice(start, start + QUERY_BLOCK)
        result = _query_block(q[rows], keys_t, v, exact=False)
        if result is None:  # a later key block outgrew the first one's maximum
            result = _query_block(q[rows], keys_t, v, exact=True)
        out[rows] = result
    return out


def _query_block(q: torch.Tensor, keys_t: torch.Tensor, v: torch.Tensor, exact: bool):
    """Attention of a block of queries over all keys, key block by key block.

    Exponentials are taken relative to a per-query shift. With ``exact`` the shift is the
    running maximum, rescaling the sums whenever it grows (the flash recurrence). Without,
    the shift stays the maximum of the first key block, which saves a reduction and two
    rescales per block and is exact as long as no later score exceeds it by ~88 (float32
    exp overflow); that is checked at the end and None returned, so the caller recomputes
    the block exactly. Returns [rows, dv].
    """
    rows = q.shape[0]
    acc = q.new_zeros(rows, v.shape[1])
    total = q.new_zeros(rows, 1)
    shift = None
    scratch = q.new_empty(rows, KEY_BLOCK)
    for start in range(0, keys_t.shape[1], KEY_BLOCK):
        cols = slice(start, start + KEY_BLOCK)
        width = min(KEY_BLOCK, keys_t.shape[1] - start)
        scores = torch.mm(q, keys_t[:, cols], out=scratch[:, :width])
        if shift is None:
            shift = scores.amax(-1, keepdim=True)
        elif exact:
            new_shift = torch.maximum(shift, scores.amax(-1, keepdim=True))
            rescale = shift.sub_(new_shift).exp_()
            shift = new_shift
            total.mul_(rescale)
            acc.mul_(rescale)
        weights = scores.sub_(shift).exp_()
        total.add_(weights.sum(-1, keepdim=True))
        acc.addmm_(weights, v[cols])
    if not exact and not (torch.isfinite(total).all() and torch.isfinite(acc).all()):
        return None
    return acc.div_(total)
