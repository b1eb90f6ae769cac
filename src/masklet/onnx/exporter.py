"""`export_model`: a SAM2Model -> a folder of ONNX graphs, constants.npz and manifest.json.

Everything is written into a temporary folder beside the destination and renamed into
place at the end, so an interrupted or failed export never leaves a half-written folder.
Graphs are traced with torch.onnx's dynamo exporter (torch.export), with the axes named
in each `GraphSpec` dynamic.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import masklet
from masklet.modeling.sam2 import SAM2Model
from masklet.onnx.graphs import GRAPH_NAMES, graph_specs
from masklet.onnx.manifest import (
    FORMAT_VERSION,
    MANIFEST_FORMAT,
    model_constants,
    model_settings,
    sha256_of,
)
from masklet.onnx.spec import TRACE_DIMS, GraphSpec

# Opsets the exporter produces: torch's dynamo exporter has implementations from 18 on
# (lower ones need a version conversion that fails on Resize / LayerNormalization), and
# onnxruntime 1.2x loads up to 23.
MIN_OPSET, MAX_OPSET = 18, 23
# 21 by default: from opset 20 GELU is one `Gelu` node rather than five elementwise ones
# (the image encoder ran about 9 % faster in onnxruntime 1.32 on CPU than at 18), and
# onnxruntime reads 21 from 1.18, the runtime's minimum. Not 23: there attention becomes
# the `Attention` op, which onnxruntime 1.32's CPU provider ran 1.6x slower than MatMul,
# Softmax, MatMul in the memory attention.
DEFAULT_OPSET = 21


class ExportError(RuntimeError):
    """A graph could not be exported (the message names it)."""


def check_opset(opset: int) -> None:
    """Raises ValueError naming the supported range for an opset outside it."""
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"opset {opset} is not supported: masklet exports opsets "
                         f"{MIN_OPSET} to {MAX_OPSET}")


def export_model(
    model: SAM2Model,
    out_dir: str | os.PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    graphs: tuple[str, ...] = GRAPH_NAMES,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Export ``model`` into the folder ``out_dir`` and return its path.

    Args:
        model: an eval-mode SAM2Model (float32; it is not modified).
        out_dir: destination folder; must not exist (or be empty) unless ``overwrite``.
        opset: ONNX opset (`MIN_OPSET` to `MAX_OPSET`).
        graphs: which graphs to write (default: all of `GRAPH_NAMES`).
        progress: called with a line per graph written (e.g. ``print``).
    Raises:
        ValueError: unsupported opset, a model in training mode or not float32.
        FileExistsError: ``out_dir`` exists and is not empty, without ``overwrite``.
        ExportError: torch.onnx failed on a graph.
    """
    check_opset(opset)
    if model.training:
        raise ValueError("export an eval-mode model (model.eval())")
    if model.dtype != torch.float32:
        raise ValueError(f"export a float32 model, not {model.dtype}")
    out = Path(out_dir)
    _check_destination(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the export is an ordinary folder
    try:
        entries = {}
        for spec in graph_specs(model, graphs):
            entries[spec.name] = _export_graph(spec, tmp, opset)
            if progress is not None:
                size = (tmp / spec.file_name).stat().st_size
                progress(f"{spec.file_name}: {size / 2**20:.1f} MiB")
        _write_extras(model, tmp, opset, entries)
        _move_into_place(tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _check_destination(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty (overwrite to replace it)")


def _export_graph(spec: GraphSpec, folder: Path, opset: int) -> dict:
    """Trace one graph into ``folder`` and return its manifest entry."""
    path = folder / spec.file_name
    inputs = spec.make_inputs(TRACE_DIMS, torch.Generator().manual_seed(0))
    module = spec.module.eval()
    # Traced with autograd on: masklet's eager inference paths (blocked attention that
    # loops over objects, in-place rotations) key on grad mode and would fix the dynamic
    # axes; where a graph should differ from training, the modules check
    # torch.compiler.is_exporting() instead (late values, query slices, MLP chunks).
    log = io.StringIO()
    try:
        with (torch.enable_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(log),
              _quiet_logger("torch.onnx")):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module, inputs, str(path),
                input_names=[t.name for t in spec.inputs],
                output_names=[t.name for t in spec.outputs],
                dynamic_shapes=spec.dynamic_shapes(),
                opset_version=opset, dynamo=True, external_data=False,
                optimize=True, verbose=False,
            )
    except Exception as exc:
        message = " ".join(str(exc).split())[:500]
        raise ExportError(f"exporting graph {spec.name!r} failed: {message}") from exc
    _check_written_opset(path, spec.name, opset)
    return spec.manifest_entry(sha256_of(path))


@contextlib.contextmanager
def _quiet_logger(name: str):
    """torch.onnx logs warnings about optional packages (torchvision ops) on every export."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _check_written_opset(path: Path, name: str, opset: int) -> None:
    """torch.onnx keeps a newer opset when it cannot convert a graph down: refuse that."""
    import onnx

    written = {o.domain: o.version for o in onnx.load(str(path)).opset_import}.get("")
    if written != opset:
        raise ExportError(f"graph {name!r} came out as opset {written}, not {opset}")


def _write_extras(model: SAM2Model, folder: Path, opset: int, entries: dict) -> None:
    """constants.npz and manifest.json (written last: its presence marks a full export)."""
    consts_path = folder / "constants.npz"
    np.savez(consts_path, **model_constants(model))
    manifest = {
        "format": MANIFEST_FORMAT,
        "format_version": FORMAT_VERSION,
        "masklet_version": masklet.__version__,
        "preset": model.config.name,
        "opset": opset,
        "graphs": entries,
        "constants": {"file": consts_path.name, "sha256": sha256_of(consts_path)},
        "settings": model_settings(model),
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def _move_into_place(tmp: Path, out: Path, overwrite: bool) -> None:
    """Rename the finished folder to ``out`` (an old ``out`` is removed only after)."""
    old = None
    if out.exists():
        _check_destination(out, overwrite)  # it may have been filled meanwhile
        old = out.parent / f"{tmp.name}.old"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
