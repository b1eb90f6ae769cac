"""Load a masklet ONNX export folder, check it, and run its graphs with ONNX Runtime.

An export folder holds ``manifest.json``, one ``.onnx`` file per graph and
``constants.npz`` (see the manifest's description in the README's Deploy section).
Everything here is numpy + onnxruntime: this module must never import torch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from masklet_runtime.errors import ExportError

FORMAT = "masklet-onnx"
FORMAT_VERSIONS = (2,)  # 2: memory_attention takes the frame at batch 1
MANIFEST = "manifest.json"

# onnxruntime's type strings for the dtypes the manifest may name.
_ORT_TYPES = {"tensor(float)": "float32", "tensor(int64)": "int64", "tensor(int32)": "int32",
              "tensor(float16)": "float16", "tensor(bool)": "bool", "tensor(uint8)": "uint8"}


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output as the manifest describes it; str dims are dynamic axes."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]


@dataclass
class Graphs:
    """The sessions of one export folder.

    Attributes:
        root: the export folder.
        manifest: manifest.json as parsed.
        settings: the model settings the runtime needs (image_size, num_maskmem, ...).
        constants: float32 arrays from constants.npz (no_mem_embed [C], ...).
        sessions: one onnxruntime InferenceSession per graph name.
    """

    root: Path
    manifest: dict[str, Any]
    settings: dict[str, Any]
    constants: dict[str, np.ndarray]
    sessions: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, tuple[TensorSpec, ...]] = field(default_factory=dict)

    def __contains__(self, name: str) -> bool:
        return name in self.sessions

    def on_cpu(self, name: str) -> bool:
        """Whether graph ``name`` runs on onnxruntime's CPU provider alone."""
        return self.sessions[name].get_providers() == ["CPUExecutionProvider"]

    def run(self, name: str, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        """Run graph ``name`` on keyword inputs; returns its outputs by name.

        Inputs are cast to the dtype the manifest declares (float32 / int64), so callers
        may pass float64 or int32 arrays and Python scalars.
        """
        session = self.sessions.get(name)
        if session is None:
            raise ExportError(f"{self.root}: the export has no graph {name!r}")
        specs = self.inputs[name]
        wanted = {s.name for s in specs}
        if set(inputs) != wanted:
            missing, extra = sorted(wanted - set(inputs)), sorted(set(inputs) - wanted)
            raise ValueError(f"graph {name!r}: missing inputs {missing}, unknown inputs {extra}")
        feed = {s.name: np.ascontiguousarray(inputs[s.name], dtype=s.dtype) for s in specs}
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, feed)))


def load_graphs(
    directory: str | Path,
    providers: list | None = None,
    intra_op_threads: int | None = None,
) -> Graphs:
    """Read and check an export folder, then open one ONNX Runtime session per graph.

    Args:
        directory: the folder `masklet export` wrote.
        providers: onnxruntime execution providers; default CPU only.
        intra_op_threads: threads per session (None: onnxruntime's default).
    Raises:
        ExportError: a one-line message naming what is missing or differs.
    """
    root = Path(directory)
    if not root.is_dir():
        raise ExportError(f"{root}: no such export folder (make one with `masklet export`)")
    manifest = _read_manifest(root)
    settings = dict(manifest.get("settings") or {})
    graphs = Graphs(root, manifest, settings, _read_constants(root, manifest))
    opts = _session_options(intra_op_threads)
    for name, entry in _graph_entries(root, manifest).items():
        path = _checked_file(root, entry, f"graph {name!r}")
        session = _open_session(path, opts, providers or ["CPUExecutionProvider"])
        ins = _specs(root, name, entry, "inputs")
        outs = _specs(root, name, entry, "outputs")
        _compare_io(root, name, "input", ins, session.get_inputs())
        _compare_io(root, name, "output", outs, session.get_outputs())
        graphs.sessions[name] = session
        graphs.inputs[name] = ins
    return graphs


def _read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST
    if not path.is_file():
        raise ExportError(f"{root}: no {MANIFEST} (not a masklet ONNX export folder)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise ExportError(f"{path}: expected a JSON object")
    if manifest.get("format") != FORMAT:
        raise ExportError(f"{path}: format is {manifest.get('format')!r}, expected {FORMAT!r}")
    version = manifest.get("format_version")
    if version not in FORMAT_VERSIONS:
        made = manifest.get("masklet_version", "unknown")
        raise ExportError(
            f"{path}: format_version {version!r} was made by another masklet version's format "
            f"(masklet {made}); this runtime reads format_version "
            f"{', '.join(map(str, FORMAT_VERSIONS))}: export again with a matching masklet"
        )
    return manifest


def _graph_entries(root: Path, manifest: dict[str, Any]) -> dict[str, dict]:
    entries = manifest.get("graphs")
    if not isinstance(entries, dict) or not entries:
        raise ExportError(f"{root / MANIFEST}: lists no graphs")
    for name, entry in entries.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            raise ExportError(f"{root / MANIFEST}: graph {name!r} has no file name")
    return entries


def _checked_file(root: Path, entry: dict, what: str) -> Path:
    """The file an entry names, after checking it exists and its sha256 matches."""
    path = root / entry["file"]
    if not path.is_file():
        raise ExportError(f"{root}: {what} file {entry['file']} is missing")
    digest = _sha256(path)
    if digest != entry.get("sha256"):
        raise ExportError(
            f"{path}: sha256 {digest[:12]}... does not match the manifest's "
            f"{str(entry.get('sha256'))[:12]}... (file changed after export)"
        )
    return path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_constants(root: Path, manifest: dict[str, Any]) -> dict[str, np.ndarray]:
    entry = manifest.get("constants")
    if entry is None:
        return {}
    if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
        raise ExportError(f"{root / MANIFEST}: 'constants' has no file name")
    path = _checked_file(root, entry, "constants")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: np.asarray(npz[k], dtype=np.float32) for k in npz.files}
    except (OSError, ValueError) as exc:
        raise ExportError(f"{path}: not a readable .npz ({exc})") from None


def _specs(root: Path, name: str, entry: dict, key: str) -> tuple[TensorSpec, ...]:
    try:
        return tuple(TensorSpec(str(s["name"]), str(s["dtype"]), tuple(s["shape"]))
                     for s in entry[key])
    except (KeyError, TypeError) as exc:
        raise ExportError(f"{root / MANIFEST}: graph {name!r} {key} malformed ({exc})") from None


def _compare_io(root: Path, graph: str, kind: str, specs, actual) -> None:
    """Names, dtypes and ranks of the session's inputs/outputs must equal the manifest's."""
    want = [s.name for s in specs]
    have = [a.name for a in actual]
    if want != have:
        raise ExportError(
            f"{root}: graph {graph!r} {kind}s are {have} but the manifest says {want}"
        )
    for spec, node in zip(specs, actual):
        dtype = _ORT_TYPES.get(node.type, node.type)
        if dtype != spec.dtype:
            raise ExportError(f"{root}: graph {graph!r} {kind} {spec.name!r} is {dtype} "
                              f"but the manifest says {spec.dtype}")
        if len(node.shape) != len(spec.shape):
            raise ExportError(f"{root}: graph {graph!r} {kind} {spec.name!r} has rank "
                              f"{len(node.shape)} but the manifest says {len(spec.shape)}")


def _session_options(intra_op_threads: int | None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if intra_op_threads is not None:
        opts.intra_op_num_threads = int(intra_op_threads)
    # Each of the five sessions has its own thread pool, and by default its threads keep
    # spinning for work after a run, on the cores that the next graph and the numpy steps
    # in between need: with masklet_nano at 256 px on 2 cores the tracker ran 3x slower
    # (0.095 against 0.032 s/frame on 40 bedroom frames); tiny at 1024 px was unchanged.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def _open_session(path: Path, opts, providers: list):
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types for bad models
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"{path}: onnxruntime cannot load it ({first})") from None
