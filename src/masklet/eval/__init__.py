"""Video object segmentation evaluation: DAVIS J&F (region IoU and boundary F-measure)."""

from masklet.eval.davis import evaluate_sequence, resolve_annotation_root, run_eval
from masklet.eval.metrics import (
    Statistics,
    boundary_f_measure,
    boundary_map,
    boundary_tolerance,
    region_similarity,
    sequence_statistics,
)
from masklet.eval.results import EvalResult, ObjectScore, SequenceScore, format_table, write_csv

__all__ = [
    "EvalResult",
    "ObjectScore",
    "SequenceScore",
    "Statistics",
    "boundary_f_measure",
    "boundary_map",
    "boundary_tolerance",
    "evaluate_sequence",
    "format_table",
    "region_similarity",
    "resolve_annotation_root",
    "run_eval",
    "sequence_statistics",
    "write_csv",
]
