"""ONNX export of masklet models: one graph per stage of the video pipeline.

`export_model(model, out_dir)` writes ``image_encoder``, ``memory_attention``,
``decoder``, ``mask_prompt`` and ``memory_encoder`` graphs, ``constants.npz`` and a
``manifest.json`` that the torch-free runtime (``masklet_runtime``) reads. Each graph
module documents its inputs and outputs; `masklet.onnx.manifest` the manifest format.
"""

from masklet.onnx.exporter import (
    DEFAULT_OPSET,
    MAX_OPSET,
    MIN_OPSET,
    ExportError,
    check_opset,
    export_model,
)
from masklet.onnx.graphs import GRAPH_NAMES, graph_specs

__all__ = [
    "DEFAULT_OPSET",
    "GRAPH_NAMES",
    "MAX_OPSET",
    "MIN_OPSET",
    "ExportError",
    "check_opset",
    "export_model",
    "graph_specs",
]
