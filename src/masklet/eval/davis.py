"""J&F evaluation of prediction folders against DAVIS-layout ground truth.

Ground truth (``gt_dir``) is a dataset root holding ``Annotations[/480p]``, or an
annotation folder itself, with one folder per sequence in either layout:

- indexed (DAVIS / YouTube-VOS): ``<seq>/00000.png`` id masks, all objects in one PNG;
- per object (SA-V val/test): ``<seq>/<obj>/00000.png`` one binary mask per object,
  the object id being the folder name read as an integer.

Predictions (``pred_dir``) mirror that layout (``pred_dir/<seq>/00000.png``). Frames
are the ground-truth PNGs (sparse annotations evaluate only annotated frames); with the
semi-supervised protocol the first and last of them are skipped. A missing prediction
file is scored as an empty mask and reported; prediction ids absent from the ground
truth are ignored.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from masklet.data.layouts import list_files, list_sequence_dirs, resolve_resolution
from masklet.data.png import load_id_mask, present_ids
from masklet.eval.metrics import (
    DEFAULT_BOUND_TH,
    boundary_f_measure,
    region_similarity,
    sequence_statistics,
)
from masklet.eval.results import EvalResult, ObjectScore, write_csv

# DAVIS marks "void" pixels with palette index 255; its toolkit turns them into background.
VOID_ID = 255


@dataclass
class _ObjectScores:
    """Per-frame scores of one object while its frames are being evaluated."""

    sequence: str
    object_id: int
    frames: list[str] = field(default_factory=list)
    j: list[float] = field(default_factory=list)
    f: list[float] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def add(self, frame: str, gt: np.ndarray, pred: np.ndarray, bound_th: float) -> None:
        self.frames.append(frame)
        self.j.append(region_similarity(gt, pred))
        self.f.append(boundary_f_measure(gt, pred, bound_th))

    def finish(self) -> ObjectScore:
        return ObjectScore(
            sequence=self.sequence,
            object_id=self.object_id,
            frame_names=tuple(self.frames),
            j_frames=tuple(self.j),
            f_frames=tuple(self.f),
            j=sequence_statistics(np.array(self.j)),
            f=sequence_statistics(np.array(self.f)),
            missing_frames=tuple(self.missing),
        )


def resolve_annotation_root(gt_dir: str | os.PathLike, resolution: str | None = None) -> Path:
    """The folder holding the ground-truth sequence folders."""
    gt_dir = Path(gt_dir)
    if not gt_dir.is_dir():
        raise FileNotFoundError(f"ground-truth folder not found: {gt_dir}")
    annotations = gt_dir / "Annotations"
    return resolve_resolution(annotations if annotations.is_dir() else gt_dir, resolution)


def _evaluated_frames(names: list[str], skip_first_and_last: bool, where: Path) -> list[str]:
    kept = names[1:-1] if skip_first_and_last else names
    if not kept:
        hint = " (skip_first_and_last=True needs at least 3)" if skip_first_and_last else ""
        raise ValueError(f"{where}: {len(names)} annotated frames leave nothing to evaluate{hint}")
    return kept


def _load_prediction(path: Path, shape: tuple[int, ...], gt_path: Path) -> np.ndarray | None:
    """Prediction ids [H, W], or None when the file does not exist."""
    if not path.is_file():
        return None
    pred = load_id_mask(path)
    if pred.shape != shape:
        raise ValueError(
            f"prediction {path} has size {pred.shape}, ground truth {gt_path} has {shape}"
        )
    return pred


def _load_indexed_gt(seq_dir: Path) -> dict[str, np.ndarray]:
    paths = list_files(seq_dir, (".png",))
    if not paths:
        raise ValueError(f"no ground-truth PNGs in {seq_dir}")
    masks: dict[str, np.ndarray] = {}
    for path in paths:
        ids = load_id_mask(path)
        ids[ids == VOID_ID] = 0
        if masks and ids.shape != next(iter(masks.values())).shape:
            raise ValueError(
                f"{path} has size {ids.shape}, other masks of {seq_dir} are "
                f"{next(iter(masks.values())).shape}"
            )
        masks[path.stem] = ids
    return masks


def _evaluate_indexed(
    seq_dir: Path, pred_dir: Path, skip: bool, bound_th: float
) -> list[ObjectScore]:
    gt = _load_indexed_gt(seq_dir)
    object_ids = sorted(set().union(*(present_ids(ids) for ids in gt.values())) - {0})
    if not object_ids:
        raise ValueError(f"no objects in the ground truth of {seq_dir}")
    scores = [_ObjectScores(seq_dir.name, obj) for obj in object_ids]
    for frame in _evaluated_frames(list(gt), skip, seq_dir):
        gt_ids = gt[frame]
        pred = _load_prediction(pred_dir / f"{frame}.png", gt_ids.shape, seq_dir / f"{frame}.png")
        for acc in scores:
            if pred is None:
                acc.missing.append(frame)
            pred_mask = np.zeros(gt_ids.shape, bool) if pred is None else pred == acc.object_id
            acc.add(frame, gt_ids == acc.object_id, pred_mask, bound_th)
    return [acc.finish() for acc in scores]


def _evaluate_per_object(
    seq_dir: Path, pred_dir: Path, skip: bool, bound_th: float
) -> list[ObjectScore]:
    results = []
    for obj_dir in list_sequence_dirs(seq_dir):
        if not obj_dir.name.isdigit():
            raise ValueError(f"object folder {obj_dir} is not named by an integer id")
        acc = _ObjectScores(seq_dir.name, int(obj_dir.name))
        names = [p.stem for p in list_files(obj_dir, (".png",))]
        for frame in _evaluated_frames(names, skip, obj_dir):
            gt_path = obj_dir / f"{frame}.png"
            gt = load_id_mask(gt_path) > 0
            pred = _load_prediction(pred_dir / obj_dir.name / f"{frame}.png", gt.shape, gt_path)
            if pred is None:
                acc.missing.append(frame)
            acc.add(frame, gt, np.zeros_like(gt) if pred is None else pred > 0, bound_th)
        results.append(acc.finish())
    return results


def evaluate_sequence(
    seq_dir: str | os.PathLike,
    pred_seq_dir: str | os.PathLike,
    *,
    skip_first_and_last: bool = True,
    bound_th: float = DEFAULT_BOUND_TH,
) -> list[ObjectScore]:
    """Scores of every ground-truth object of one sequence folder (either layout)."""
    seq_dir, pred_seq_dir = Path(seq_dir), Path(pred_seq_dir)
    has_pngs = bool(list_files(seq_dir, (".png",)))
    has_dirs = any(p.is_dir() and not p.name.startswith(".") for p in seq_dir.iterdir())
    if has_pngs and has_dirs:
        raise ValueError(f"{seq_dir} mixes PNG files and object folders")
    if has_dirs:
        return _evaluate_per_object(seq_dir, pred_seq_dir, skip_first_and_last, bound_th)
    return _evaluate_indexed(seq_dir, pred_seq_dir, skip_first_and_last, bound_th)


def _select(gt_seqs: list[Path], sequences: Iterable[str] | None, gt_root: Path) -> list[Path]:
    if sequences is None:
        return gt_seqs
    by_name = {p.name: p for p in gt_seqs}
    wanted = list(sequences)
    unknown = [name for name in wanted if name not in by_name]
    if unknown:
        raise ValueError(f"sequences not in {gt_root}: {unknown}")
    return [by_name[name] for name in wanted]


def run_eval(
    pred_dir: str | os.PathLike,
    gt_dir: str | os.PathLike,
    csv_path: str | os.PathLike | None = None,
    *,
    skip_first_and_last: bool = True,
    bound_th: float = DEFAULT_BOUND_TH,
    resolution: str | None = None,
    sequences: Iterable[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> EvalResult:
    """Evaluate a prediction folder against ground truth with DAVIS J&F.

    Args:
        pred_dir: ``pred_dir/<seq>/NNNNN.png`` (same layout as the ground truth).
        gt_dir: dataset root (with ``Annotations``) or annotation folder.
        csv_path: when given, the result CSV is written there (atomically).
        skip_first_and_last: drop the first and last annotated frame of each sequence
            (the semi-supervised protocol; the first frame carries the prompt).
        bound_th: boundary tolerance, fraction of the image diagonal (or pixels if >= 1).
        resolution: resolution level below ``Annotations`` (auto-detected if None).
        sequences: evaluate only these sequence names (default: all ground-truth ones).
        progress: called with each sequence name before it is evaluated.
    """
    pred_root = Path(pred_dir)
    if not pred_root.is_dir():
        raise FileNotFoundError(f"prediction folder not found: {pred_root}")
    gt_root = resolve_annotation_root(gt_dir, resolution)
    objects: list[ObjectScore] = []
    missing_sequences = []
    for seq_dir in _select(list_sequence_dirs(gt_root), sequences, gt_root):
        if progress is not None:
            progress(seq_dir.name)
        pred_seq = pred_root / seq_dir.name
        if not pred_seq.is_dir():
            missing_sequences.append(seq_dir.name)
        objects.extend(
            evaluate_sequence(
                seq_dir, pred_seq, skip_first_and_last=skip_first_and_last, bound_th=bound_th
            )
        )
    result = EvalResult(
        objects=tuple(objects),
        skip_first_and_last=skip_first_and_last,
        bound_th=bound_th,
        missing_sequences=tuple(missing_sequences),
    )
    if csv_path is not None:
        write_csv(result, csv_path)
    return result
