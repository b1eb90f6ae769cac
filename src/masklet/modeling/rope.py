"""Axial rotary position encoding (RoPE) for 2-D token grids, and attention that uses it.

Each head's channels are taken in consecutive pairs (2i, 2i+1) and every pair is rotated
by an angle that grows with the token's position: the first half of the pairs follow the
token's column (x), the second half its row (y). The official code does this with complex
tensors; here the same rotation is written with real cos/sin tables, which also runs in
half precision and on backends without complex support.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from masklet.modeling.attention import Attention
from masklet.modeling.common import linear


@lru_cache(maxsize=32)
def rope_tables(
    height: int, width: int, dim: int, theta: float, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cached (cos, sin) tables for a row-major height x width grid: each [H * W, dim / 2].

    Angles are computed in float32 (as the official complex version does) and then cast,
    so every dtype sees the same rounded angles. Column j of the tables rotates the
    channel pair (2j, 2j + 1) of a head of width ``dim``.
    """
    if dim % 4:
        raise ValueError(f"RoPE head dim must be a multiple of 4, got {dim}")
    # Normal grad-free tensors, so a table built under inference_mode can still be used
    # by later autograd-enabled calls (e.g. fine-tuning) from the same cache.
    with torch.inference_mode(False), torch.no_grad():
        exponents = torch.arange(0, dim, 4, device=device, dtype=torch.float32) / dim
        freqs = 1.0 / (theta**exponents)
        index = torch.arange(height * width, device=device, dtype=torch.float32)
        cols = index % width
        rows = torch.div(index, width, rounding_mode="floor")
        angles = torch.cat([torch.outer(cols, freqs), torch.outer(rows, freqs)], dim=-1)
        return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs of x: [..., N, dim] with tables [N, dim / 2] -> [..., N, dim].

    Equivalent to multiplying the complex numbers x[2j] + i x[2j+1] by cos + i sin.
    Plain real arithmetic in x's dtype; `apply_axial_rope` uses the faster complex form
    (and this one under torch.compile, which generates no code for complex numbers).
    """
    pairs = x.unflatten(-1, (-1, 2))
    real, imag = pairs[..., 0], pairs[..., 1]
    rotated = (real * cos - imag * sin, real * sin + imag * cos)
    return torch.stack(rotated, dim=-1).flatten(-2)


@lru_cache(maxsize=32)
def _cis_table(cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """complex64 cos + i sin for one cached pair of tables (keyed by their identity)."""
    with torch.inference_mode(False), torch.no_grad():
        return torch.complex(cos.float(), sin.float())


def _rotate(x: torch.Tensor, cis: torch.Tensor, inplace: bool) -> torch.Tensor:
    """Rotate channel pairs of x [..., N, dim] by the complex table cis [N, dim / 2].

    One complex multiply instead of six real passes. Half-precision inputs are rotated
    in float32 and cast back (complex bf16 does not exist; the official code does the
    same). ``inplace`` overwrites x (float32 only, and only outside autograd).
    """
    if inplace and x.dtype == torch.float32:
        torch.view_as_complex(x.unflatten(-1, (-1, 2))).mul_(cis)
        return x
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))
    return torch.view_as_real(pairs * cis).flatten(-2).to(x.dtype)


def apply_axial_rope(
    q: torch.Tensor,
    k: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    *,
    repeat_k: bool = False,
    num_k_exclude: int = 0,
    inplace: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate queries and keys by their grid positions.

    q: [B, heads, Nq, c]; k: [B, heads, Nk, c]; cos, sin: [Nq, c / 2] (from `rope_tables`).
    The first Nk - num_k_exclude keys are rotated; the trailing ``num_k_exclude`` keys
    (object pointers, which have no grid position) are left unchanged. With ``repeat_k``
    the rotated keys are r >= 0 consecutive copies of the query grid (r memory frames),
    key i taking the position of query i mod Nq; otherwise there must be exactly Nq.
    ``inplace`` (inference only) rotates fresh float32 projections where they lie,
    saving a copy of the keys; q and k must then have a unit last stride.
    """
    num_q = q.shape[-2]
    num_rope = k.shape[-2] - num_k_exclude
    if repeat_k:
        if num_rope % num_q:
            raise ValueError(f"{num_rope} rotated keys are not whole copies of {num_q} queries")
    elif num_rope != num_q:
        raise ValueError(f"{num_rope} rotated keys != {num_q} queries; use rope_k_repeat")
    # Inductor generates no code for complex numbers: under torch.compile, rotate real
    # pairs out of place instead of multiplying by the cached complex table.
    compiling = torch.compiler.is_compiling()
    cis = None if compiling else _cis_table(cos, sin)
    inplace = inplace and not compiling

    def rotate(x: torch.Tensor, in_place: bool) -> torch.Tensor:
        if cis is None:
            return rotate_pairs(x.float(), cos.float(), sin.float()).to(x.dtype)
        return _rotate(x, cis, in_place)

    q = rotate(q, inplace)
    if num_rope == 0:
        return q, k
    # Split keys into [..., r, Nq, c] so the table broadcasts instead of being tiled.
    grid_keys = k[..., :num_rope, :].unflatten(-2, (-1, num_q))
    if inplace and k.dtype == torch.float32:
        rotate(grid_keys, in_place=True)
        return q, k
    rotated = rotate(grid_keys, in_place=False).flatten(-3, -2)
    if num_k_exclude == 0:
        return q, rotated
    return q, torch.cat([rotated, k[..., num_rope:, :]], dim=-2)


def apply_axial_rope_traced(
    q: torch.Tensor,
    k: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    num_k_exclude: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`apply_axial_rope` with repeated keys for a tensor count of unrotated keys (export).

    q: [B, heads, Nq, c]; k: [B, heads, Nk, c]; num_k_exclude: [] int64. No shape or branch
    depends on the count (an exported graph keeps Nk and the count dynamic): every key is
    rotated by the query position i mod Nq, then the trailing ``num_k_exclude`` keys take
    back their unrotated values. Real arithmetic only (ONNX has no complex numbers).
    """
    q = rotate_pairs(q.float(), cos, sin).to(q.dtype)
    index = torch.arange(k.shape[-2], device=k.device)
    grid = index % q.shape[-2]
    rotated = rotate_pairs(k.float(), cos[grid], sin[grid]).to(k.dtype)
    keep = (index < k.shape[-2] - num_k_exclude).unsqueeze(-1)
    return q, torch.where(keep, rotated, k)


class RoPEAttention(Attention):
    """Multi-head attention whose queries and keys carry axial rotary position encoding.

    Queries always form one 2-D grid of tokens. Keys either form the same grid
    (self-attention) or, with ``rope_k_repeat``, several frames of it followed by
    ``num_k_exclude_rope`` unrotated tokens (cross-attention to memories).

    Grid size: pass ``grid_hw=(H, W)`` to ``forward`` for an explicit row-major H x W
    grid. Without it the grid is ``feat_sizes`` = (width, height) when that has the
    query count, and otherwise the official behaviour is kept: a square grid of side
    sqrt(Nq) (non-square token counts then raise).
    """

    def __init__(
        self,
        *,
        embedding_dim: int,
        num_heads: int,
        downsample_rate: int = 1,
        dropout: float = 0.0,
        kv_in_dim: int | None = None,
        rope_theta: float = 10000.0,
        rope_k_repeat: bool = False,
        feat_sizes: tuple[int, int] = (64, 64),
    ) -> None:
        super().__init__(
            embedding_dim=embedding_dim,
            num_heads=num_heads,
            downsample_rate=downsample_rate,
            dropout=dropout,
            kv_in_dim=kv_in_dim,
        )
        self.rope_theta = float(rope_theta)
        self.rope_k_repeat = rope_k_repeat
        self.feat_sizes = (int(feat_sizes[0]), int(feat_sizes[1]))

    def grid_size(
        self, num_tokens: int, grid_hw: tuple[int, int] | None = None
    ) -> tuple[int, int]:
        """(H, W) of the query grid holding ``num_tokens`` tokens (see the class docstring)."""
        if grid_hw is not None:
            height, width = grid_hw
            if height * width != num_tokens:
                raise ValueError(f"grid {grid_hw} does not hold {num_tokens} query tokens")
            return int(height), int(width)
        width, height = self.feat_sizes
        if width * height == num_tokens:
            return height, width
        side = math.isqrt(num_tokens)
        if side * side != num_tokens:
            raise ValueError(f"{num_tokens} query tokens are not a square grid; pass grid_hw")
        return side, side

    def rope_cos_sin(self, height: int, width: int, dim: int, device: torch.device):
        """cos, sin tables of an H x W grid for head width ``dim``, in float32 whatever the
        activations' dtype (the rotation runs in float32)."""
        # torch.compile folds the tables into its graph itself; it cannot use the cache.
        tables = rope_tables.__wrapped__ if torch.compiler.is_compiling() else rope_tables
        return tables(height, width, dim, self.rope_theta, device, torch.float32)

    def rotate(self, q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
               num_k_exclude: int) -> tuple[torch.Tensor, torch.Tensor]:
        """q: [B, heads, Nq, c], k: [B, heads, Nk, c] rotated by the query grid's tables
        (keys repeat it over memory frames); the last ``num_k_exclude`` keys are not.
        A tensor ``num_k_exclude`` (ONNX export) takes the shape-independent path."""
        if isinstance(num_k_exclude, torch.Tensor):
            return apply_axial_rope_traced(q, k, cos, sin, num_k_exclude)
        return apply_axial_rope(q, k, cos, sin, repeat_k=self.rope_k_repeat,
                                num_k_exclude=num_k_exclude, inplace=not torch.is_grad_enabled())

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        num_k_exclude_rope: int = 0,
        grid_hw: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """q: [B or 1, Nq, embedding_dim]; k, v: [B, Nk, kv_in_dim] -> [B, Nq, embedding_dim].

        The last ``num_k_exclude_rope`` keys are not rotated; ``grid_hw`` is the query
        grid's (H, W), see the class docstring for the default. Queries of batch 1 are
        shared by all B key sets (objects tracked on the same frame).
        """
        if not self.rope_k_repeat and q.shape[-2] != k.shape[-2]:
            raise ValueError("keys and queries differ in length but rope_k_repeat is False")
        late = self.values_late()
        q, k = self.split_heads(linear(q, self.q_proj)), self.split_heads(linear(k, self.k_proj))
        height, width = self.grid_size(q.shape[-2], grid_hw)
        cos, sin = self.rope_cos_sin(height, width, q.shape[-1], q.device)
        q, k = self.rotate(q, k, cos, sin, num_k_exclude_rope)
        if late:
            return self.attend_late(q, k, v)
        if q.shape[0] < k.shape[0]:  # queries shared by every memory of the batch
            q = q.expand(k.shape[0], -1, -1, -1)
        return self.attend(q, k, self.split_heads(linear(v, self.v_proj)))
