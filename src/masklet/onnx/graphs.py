"""The graphs an export holds, in the order they are written."""

from __future__ import annotations

from masklet.modeling.sam2 import SAM2Model
from masklet.onnx.decoder import decoder_spec
from masklet.onnx.image_encoder import image_encoder_spec
from masklet.onnx.mask_prompt import mask_prompt_spec
from masklet.onnx.memory_attention import memory_attention_spec
from masklet.onnx.memory_encoder import memory_encoder_spec
from masklet.onnx.spec import GraphSpec

GRAPH_NAMES = ("image_encoder", "memory_attention", "decoder", "mask_prompt", "memory_encoder")

_BUILDERS = {
    "image_encoder": image_encoder_spec,
    "memory_attention": memory_attention_spec,
    "decoder": decoder_spec,
    "mask_prompt": mask_prompt_spec,
    "memory_encoder": memory_encoder_spec,
}


def graph_specs(model: SAM2Model, names: tuple[str, ...] = GRAPH_NAMES) -> list[GraphSpec]:
    """The specs of ``names`` for ``model`` (all graphs by default)."""
    unknown = [n for n in names if n not in _BUILDERS]
    if unknown:
        raise ValueError(f"unknown graph(s) {unknown}; known: {', '.join(GRAPH_NAMES)}")
    return [_BUILDERS[n](model) for n in names]
