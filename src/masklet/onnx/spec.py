"""What one exported graph is: its torch module, named inputs / outputs and example inputs.

Every graph module of this package builds a `GraphSpec` from a `SAM2Model`. The exporter
turns the spec into an ONNX file and a manifest entry; the tests feed the same random
inputs (`GraphSpec.make_inputs`, at any size of the dynamic axes) to the torch module and
to the exported graph.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

# Manifest dtype names of the torch dtypes a graph input or output may have.
DTYPE_NAMES = {torch.float32: "float32", torch.int64: "int64"}

# Sizes of the dynamic axes in the example inputs the graphs are traced with. Sizes of 2+
# (not 1) so the tracer cannot mistake a dynamic axis for a broadcast one.
TRACE_DIMS = {"B": 2, "N": 3, "M_FRAMES": 2, "P": 4, "R": 3}


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: its name, dtype and shape (str entries are dynamic axes)."""

    name: str
    dtype: str  # "float32" or "int64"
    shape: tuple[int | str, ...]

    def as_json(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


InputMaker = Callable[[dict[str, int], torch.Generator], tuple[torch.Tensor, ...]]


@dataclass(frozen=True)
class GraphSpec:
    """A graph to export.

    Attributes:
        name: graph name, also the file stem (``<name>.onnx``).
        module: the torch module; ``module(*inputs)`` returns the outputs in order.
        inputs, outputs: names, dtypes and shapes, in the module's argument / return order.
        make_inputs: random inputs for the given sizes of the helper axes (see
            `TRACE_DIMS`; a maker reads the keys it needs, e.g. "M" is built from
            "M_FRAMES" and "P"); ``make_inputs(TRACE_DIMS, generator)`` are the trace
            inputs. Every str axis of ``inputs`` is dynamic in the exported graph.
    """

    name: str
    module: nn.Module
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    make_inputs: InputMaker

    @property
    def file_name(self) -> str:
        return f"{self.name}.onnx"

    def manifest_entry(self, sha256: str) -> dict:
        return {
            "file": self.file_name,
            "sha256": sha256,
            "inputs": [t.as_json() for t in self.inputs],
            "outputs": [t.as_json() for t in self.outputs],
        }

    def dynamic_shapes(self) -> dict[str, dict[int, torch.export.Dim]]:
        """torch.export dynamic shapes: each str axis becomes one Dim shared by name."""
        dims: dict[str, torch.export.Dim] = {}
        shapes: dict[str, dict[int, torch.export.Dim]] = {}
        for spec in self.inputs:
            axes = {}
            for i, size in enumerate(spec.shape):
                if isinstance(size, str):
                    if size not in dims:
                        dims[size] = torch.export.Dim(size, min=1, max=1 << 20)
                    axes[i] = dims[size]
            shapes[spec.name] = axes
        return shapes


def randn(gen: torch.Generator, *shape: int) -> torch.Tensor:
    """float32 standard-normal tensor drawn from ``gen``."""
    return torch.randn(*shape, generator=gen)


def flag(value: float) -> torch.Tensor:
    """A [1] float32 0/1 switch input."""
    return torch.tensor([float(value)])
