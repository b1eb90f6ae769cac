"""SAM prompt encoder: points, boxes and mask prompts -> sparse and dense embeddings."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from masklet.modeling.common import LayerNorm2d

# Point label conventions shared with the predictors.
LABEL_PAD = -1
LABEL_NEGATIVE = 0
LABEL_POSITIVE = 1
LABEL_BOX_TOP_LEFT = 2
LABEL_BOX_BOTTOM_RIGHT = 3


class PositionEmbeddingRandom(nn.Module):
    """Fourier-feature encoding of 2-D positions with a fixed random Gaussian matrix.

    Each position (x, y) in [0, 1]^2 becomes [sin(2 pi p G), cos(2 pi p G)] with
    p = 2 (x, y) - 1 and G of shape [2, num_pos_feats], giving 2 * num_pos_feats channels.
    The encoding is computed in float32 (angles reach tens of radians, too large for
    half precision) and returned in the matrix's dtype.
    """

    def __init__(self, num_pos_feats: int, scale: float | None = None) -> None:
        super().__init__()
        if scale is None or scale <= 0.0:
            scale = 1.0
        self.register_buffer(
            "positional_encoding_gaussian_matrix", scale * torch.randn((2, num_pos_feats))
        )

    def _encode(self, unit_coords: torch.Tensor) -> torch.Tensor:
        """unit_coords: [..., 2] float32 (x, y) in [0, 1] -> [..., 2 * num_pos_feats]."""
        gaussian = self.positional_encoding_gaussian_matrix
        # Out of autocast: under bf16 autocast the product (and so the angles, of tens of
        # radians once scaled by 2 pi) would be rounded by up to ~0.1 rad.
        with torch.autocast(unit_coords.device.type, enabled=False):
            angles = (2 * unit_coords.float() - 1) @ gaussian.float()
        angles = 2 * math.pi * angles
        return torch.cat([angles.sin(), angles.cos()], dim=-1).to(gaussian.dtype)

    def forward(self, size: tuple[int, int]) -> torch.Tensor:
        """Encoding of the centres of an (H, W) grid: -> [2 * num_pos_feats, H, W]."""
        height, width = size
        device = self.positional_encoding_gaussian_matrix.device
        ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
        xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width
        grid = torch.stack(
            [xs[None, :].expand(height, width), ys[:, None].expand(height, width)], dim=-1
        )
        return self._encode(grid).permute(2, 0, 1)

    def forward_with_coords(
        self, coords: torch.Tensor, image_size: tuple[int, int]
    ) -> torch.Tensor:
        """coords: [B, N, 2] pixel (x, y) in an image of size (H, W)
        -> [B, N, 2 * num_pos_feats]."""
        height, width = image_size
        coords = coords.float()
        unit = torch.stack([coords[..., 0] / width, coords[..., 1] / height], dim=-1)
        return self._encode(unit)


class PromptEncoder(nn.Module):
    """Embeds point, box and mask prompts for the SAM mask decoder.

    Points carry labels: -1 padding, 0 negative, 1 positive, 2 box top-left corner,
    3 box bottom-right corner. Any other label gets the bare positional encoding
    (no learned type embedding), as in the official model.

    Submodule names (``pe_layer``, ``point_embeddings``, ``not_a_point_embed``,
    ``mask_downscaling``, ``no_mask_embed``) follow the official checkpoints.

    Args:
        embed_dim: prompt embedding width C.
        image_embedding_size: (H, W) of the image embedding (64x64 for 1024 px input).
        input_image_size: (H, W) of the padded model input, the frame of point coordinates.
        mask_in_chans: hidden channels of the mask-prompt downscaling convolutions.
        activation: activation class used between those convolutions.
    """

    num_point_embeddings = 4

    def __init__(
        self,
        *,
        embed_dim: int,
        image_embedding_size: tuple[int, int],
        input_image_size: tuple[int, int],
        mask_in_chans: int,
        activation: type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.image_embedding_size = tuple(image_embedding_size)
        self.input_image_size = tuple(input_image_size)
        # Mask prompts come at 4x the embedding resolution (256x256 for a 64x64 embedding).
        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        self.point_embeddings = nn.ModuleList(
            nn.Embedding(1, embed_dim) for _ in range(self.num_point_embeddings)
        )
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        hidden = mask_in_chans // 4
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, hidden, kernel_size=2, stride=2),
            LayerNorm2d(hidden),
            activation(),
            nn.Conv2d(hidden, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            activation(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        """Positional encoding of every image-embedding cell: -> [1, C, H, W].

        Recomputed on each call (it is cheap) so it always reflects the current weights.
        """
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def _label_table(self) -> torch.Tensor:
        """Learned embedding added per label: [6, C], rows for labels -1..3, then a zero row."""
        rows = [self.not_a_point_embed.weight]
        rows += [embedding.weight for embedding in self.point_embeddings]
        rows.append(torch.zeros_like(self.not_a_point_embed.weight))
        return torch.cat(rows, dim=0)

    def _embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """coords: [B, N, 2] pixel (x, y); labels: [B, N] int64 -> [B, N, C]."""
        # Coordinates index pixel corners; the encoding expects pixel centres.
        encoding = self.pe_layer.forward_with_coords(coords + 0.5, self.input_image_size)
        known = (labels >= LABEL_PAD) & (labels <= LABEL_BOX_BOTTOM_RIGHT)
        zero_row = self.num_point_embeddings + 1
        rows = torch.where(known, labels + 1, torch.full_like(labels, zero_row))
        # Padding points carry no position at all, only the "not a point" embedding.
        encoding = encoding.masked_fill((labels == LABEL_PAD).unsqueeze(-1), 0.0)
        return encoding + F.embedding(rows, self._label_table())

    @staticmethod
    def _sparse_inputs(
        points: tuple[torch.Tensor, torch.Tensor] | None, boxes: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Merge points and box corners into one point list: ([B, N, 2], [B, N])."""
        coords, labels = [], []
        if points is not None:
            coords.append(points[0])
            labels.append(points[1].long())
        if boxes is not None:
            corners = boxes.reshape(-1, 2, 2)
            corner_labels = torch.tensor(
                [LABEL_BOX_TOP_LEFT, LABEL_BOX_BOTTOM_RIGHT], device=boxes.device
            )
            coords.append(corners)
            labels.append(corner_labels.expand(corners.shape[0], 2))
        elif points is not None:
            # Without a box the decoder was trained with one extra padding point.
            batch = points[0].shape[0]
            coords.append(points[0].new_zeros(batch, 1, 2))
            labels.append(torch.full((batch, 1), LABEL_PAD, device=points[1].device))
        return torch.cat(coords, dim=1), torch.cat(labels, dim=1)

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed prompts.

        Args:
            points: (coords [B, N, 2] pixel (x, y) in input_image_size, labels [B, N]) or None.
            boxes: [B, 4] as (x0, y0, x1, y1) pixels, or None.
            masks: [B, 1, 4*H, 4*W] mask logits, or None.

        Returns:
            sparse: [B, N', C] with N' = N + 1 (padding point) for points alone,
                N + 2 with a box, 0 with neither.
            dense: [B, C, H, W]; without a mask prompt a broadcast (expanded) view of
                ``no_mask_embed``.
        """
        batch = _batch_size(points, boxes, masks)
        weight = self.no_mask_embed.weight
        if points is None and boxes is None:
            sparse = weight.new_empty((batch, 0, self.embed_dim))
        else:
            sparse = self._embed_points(*self._sparse_inputs(points, boxes))
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            height, width = self.image_embedding_size
            dense = weight.reshape(1, -1, 1, 1).expand(batch, -1, height, width)
        return sparse, dense


def _batch_size(
    points: tuple[torch.Tensor, torch.Tensor] | None,
    boxes: torch.Tensor | None,
    masks: torch.Tensor | None,
) -> int:
    """Batch size implied by the first prompt given (1 if none)."""
    if points is not None:
        return points[0].shape[0]
    if boxes is not None:
        return boxes.shape[0]
    if masks is not None:
        return masks.shape[0]
    return 1
