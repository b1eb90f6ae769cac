"""Reading, checking and writing model weights (official .pt files and safetensors)."""

from __future__ import annotations

import functools
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from masklet.config import PRESETS, ModelConfig

StateDict = dict[str, torch.Tensor]


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not fit the chosen model."""


@dataclass(frozen=True)
class KeyReport:
    """How a state dict compares with a model's expected keys and shapes."""

    missing: tuple[str, ...]  # expected by the model, absent from the checkpoint
    unexpected: tuple[str, ...]  # in the checkpoint, unknown to the model
    mismatched: tuple[tuple[str, tuple, tuple], ...]  # (key, checkpoint shape, model shape)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    @property
    def matching(self) -> int:
        """A closeness score: entries whose name and shape both agree."""
        return -(len(self.missing) + len(self.unexpected) + len(self.mismatched))


def read_state_dict(path: str | os.PathLike) -> StateDict:
    """Load weights from an official `.pt` (``{"model": ...}``), a bare state dict or
    safetensors.

    The format is told from the file's first bytes, not its name. Only tensors are read
    (``weights_only``): a file that holds other Python objects is refused, since loading
    those could run code from the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    kind = _file_kind(path)
    if kind is None:
        empty = " (it is empty)" if path.stat().st_size == 0 else ""
        raise CheckpointError(f"{path} is not a PyTorch or safetensors checkpoint{empty}")
    obj = _load_safetensors(path) if kind == "safetensors" else _load_torch(path)
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"{path} does not hold a state dict (expected a mapping of names to tensors, "
            "or the official {'model': state_dict} layout)"
        )
    if not obj:
        raise CheckpointError(f"no model weights in {path} (it holds no tensors)")
    return obj


def _file_kind(path: Path) -> str | None:
    """'torch' (zip archive or legacy pickle), 'safetensors', or None, from the first bytes."""
    with open(path, "rb") as f:
        head = f.read(9)
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":  # zip / pickle protocol >= 2
        return "torch"
    # safetensors: a little-endian u64 header length, then the JSON header itself.
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") > 1:
        return "safetensors"
    return None


def _load_safetensors(path: Path) -> StateDict:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # the library raises several types for a bad file
        detail = " ".join(str(exc).split())
        raise CheckpointError(f"{path} is a damaged safetensors file ({detail})") from exc


def _load_torch(path: Path) -> object:
    # torch's own messages advise retrying with weights_only=False, which would run any
    # code a hostile file carries: they are replaced, never passed on.
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if found:
            raise CheckpointError(
                f"{path} holds Python objects besides tensors ({found.group(1)}); masklet "
                "reads only weights, since loading such objects can run code from the file "
                "(save just the state dict: torch.save(model.state_dict(), PATH))") from exc
        raise CheckpointError(f"{path} is damaged or not a PyTorch checkpoint") from exc
    except Exception as exc:  # zip and stream errors of a truncated or damaged file
        raise CheckpointError(
            f"{path} is damaged or incomplete (not a readable PyTorch checkpoint)") from exc


def save_safetensors(state_dict: StateDict, path: str | os.PathLike) -> None:
    """Write weights as safetensors, atomically (a temp file renamed into place)."""
    from safetensors.torch import save_file

    from masklet.export.atomic import atomic_path

    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of a model, built on the meta device (no memory, fast)."""
    return dict(_shapes_of(config))


@functools.lru_cache(maxsize=32)
def _shapes_of(config: ModelConfig) -> tuple[tuple[str, tuple[int, ...]], ...]:
    # Cached: `closest_preset` asks for every preset each time a checkpoint does not fit.
    from masklet.modeling.sam2 import SAM2Model

    with torch.device("meta"):
        model = SAM2Model(config)
    return tuple((k, tuple(v.shape)) for k, v in model.state_dict().items())


def compare_keys(state_dict: StateDict, expected: dict[str, tuple[int, ...]]) -> KeyReport:
    got = set(state_dict)
    want = set(expected)
    mismatched = tuple(
        (k, tuple(state_dict[k].shape), expected[k])
        for k in sorted(got & want)
        if tuple(state_dict[k].shape) != expected[k]
    )
    return KeyReport(tuple(sorted(want - got)), tuple(sorted(got - want)), mismatched)


def closest_preset(state_dict: StateDict) -> tuple[str, bool]:
    """The preset whose names and shapes fit ``state_dict`` best, and whether it fits exactly."""
    scores = {name: compare_keys(state_dict, expected_shapes(cfg)) for name, cfg in PRESETS.items()}
    best = max(scores, key=lambda n: scores[n].matching)
    return best, scores[best].ok


def _list_some(keys, limit: int = 5) -> str:
    keys = list(keys)
    shown = ", ".join(str(k) for k in keys[:limit])
    more = f", ... ({len(keys) - limit} more)" if len(keys) > limit else ""
    return f"{len(keys)}: {shown}{more}"


def check_fits(state_dict: StateDict, config: ModelConfig, source: str = "checkpoint") -> None:
    """Raise `CheckpointError` naming the preset, the bad keys and the likely preset."""
    report = compare_keys(state_dict, expected_shapes(config))
    if report.ok:
        return
    # One line (the command line shows errors in one line): the verdict and the preset the
    # file fits first, then the differences as clauses separated by '; '.
    clauses = []
    if report.missing:
        clauses.append(f"missing keys {_list_some(report.missing)}")
    if report.unexpected:
        clauses.append(f"unexpected keys {_list_some(report.unexpected)}")
    if report.mismatched:
        shapes = [f"{k} {tuple(a)} vs model {tuple(b)}" for k, a, b in report.mismatched]
        clauses.append(f"shape mismatches {_list_some(shapes)}")
    best, exact = closest_preset(state_dict)
    fit = "it fits preset" if exact else "the closest preset (not an exact fit) is"
    raise CheckpointError(f"{source} does not fit preset {config.name!r}; {fit} {best!r}. "
                          f"Differences: {'; '.join(clauses)}.")
