"""The `memory_attention` graph: a frame's tokens conditioned on B objects' memories.

The number of memory tokens M (spatial memory frames, then object-pointer tokens) and the
number of pointer tokens are dynamic. The pointer count is a scalar graph input: the
rotary encoding then takes masklet's shape-independent path (`apply_axial_rope_traced`,
real arithmetic), so one graph serves every memory-bank size.

The frame comes in once (batch 1) for all B objects, as masklet's tracker passes it: the
first layer's self-attention, which sees only the frame, runs once, and the batch widens
to B at the first cross-attention. That attention mixes the raw 64-wide memories and
projects afterwards (masklet's `values_late`), a quarter of the value work.
"""

from __future__ import annotations

import torch
from torch import nn

from masklet.modeling.sam2 import SAM2Model
from masklet.onnx.spec import GraphSpec, TensorSpec, randn


def memory_tokens_per_frame(model: SAM2Model) -> int:
    """Tokens of one stored memory: H*W for SAM 2, the perceiver's latents for EdgeTAM."""
    if model.spatial_perceiver is not None:
        return model.spatial_perceiver.tokens_per_frame
    return model.config.feat_size**2


class MemoryAttentionGraph(nn.Module):
    """`SAM2Model.memory_attention` over sequence-first inputs, output as a feature map."""

    def __init__(self, model: SAM2Model) -> None:
        super().__init__()
        self.model = model
        self.side = model.config.feat_size

    def forward(
        self,
        curr: torch.Tensor,
        curr_pos: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        num_obj_ptr_tokens: torch.Tensor,
    ) -> torch.Tensor:
        """curr, curr_pos: [HW, 1, C]; memory, memory_pos: [M, B, mem_dim], the last
        ``num_obj_ptr_tokens`` ([] int64) of them object pointers -> pix_feat [B, C, H, W]."""
        out = self.model.memory_attention(
            curr=curr, curr_pos=curr_pos, memory=memory, memory_pos=memory_pos,
            num_obj_ptr_tokens=num_obj_ptr_tokens, grid_hw=(self.side, self.side),
        )
        # As masklet's attend_memory: [HW, B, C] -> [B, C, H, W].
        return out.permute(1, 2, 0).reshape(-1, out.shape[-1], self.side, self.side)


def memory_attention_spec(model: SAM2Model) -> GraphSpec:
    h, c, mem = model.config.feat_size, model.hidden_dim, model.mem_dim
    tokens = memory_tokens_per_frame(model)

    def make_inputs(dims: dict[str, int], gen: torch.Generator) -> tuple[torch.Tensor, ...]:
        """dims: "B" objects, "M_FRAMES" spatial memory frames, "P" pointer tokens."""
        b, ptrs = dims["B"], dims["P"]
        m = dims["M_FRAMES"] * tokens + ptrs
        return (randn(gen, h * h, 1, c), randn(gen, h * h, 1, c), randn(gen, m, b, mem),
                randn(gen, m, b, mem), torch.tensor(ptrs, dtype=torch.int64))

    return GraphSpec(
        name="memory_attention",
        module=MemoryAttentionGraph(model),
        inputs=(
            TensorSpec("curr", "float32", (h * h, 1, c)),
            TensorSpec("curr_pos", "float32", (h * h, 1, c)),
            TensorSpec("memory", "float32", ("M", "B", mem)),
            TensorSpec("memory_pos", "float32", ("M", "B", mem)),
            TensorSpec("num_obj_ptr_tokens", "int64", ()),
        ),
        outputs=(TensorSpec("pix_feat", "float32", ("B", c, h, h)),),
        make_inputs=make_inputs,
    )
