"""`masklet eval`: J&F of predicted masks against ground truth (DAVIS protocol)."""

from __future__ import annotations

from pathlib import Path

import click

from masklet.cli.checks import FiniteRange, check_new_file
from masklet.cli.common import CliError, user_errors


@click.command("eval")
@click.argument("pred_dir", type=click.Path(path_type=Path))
@click.argument("gt_dir", type=click.Path(path_type=Path))
@click.option("--csv", "csv_path", type=click.Path(path_type=Path), default=None,
              help="Also write the per-object scores to this CSV file.")
@click.option("--keep-first-last", is_flag=True,
              help="Also score the first and last annotated frames (the protocol skips them).")
@click.option("--sequence", "sequences", multiple=True, metavar="NAME",
              help="Score only these sequences (repeatable; default: every ground-truth one).")
@click.option("--bound-th", type=FiniteRange(min=0, min_open=True), default=0.008,
              show_default=True, help="Boundary tolerance: a fraction of the image diagonal "
                                      "when below 1, else a number of pixels.")
@user_errors
def eval_cmd(pred_dir, gt_dir, csv_path, keep_first_last, sequences, bound_th):
    """Score PRED_DIR (<seq>/NNNNN.png) against GT_DIR (DAVIS / YouTube-VOS layout)."""
    from masklet.eval import format_table, run_eval

    if csv_path is not None:
        check_new_file(csv_path, "--csv")
    check_predictions(pred_dir, gt_dir, sequences or None)
    result = run_eval(pred_dir, gt_dir, csv_path, skip_first_and_last=not keep_first_last,
                      bound_th=bound_th, sequences=sequences or None)
    click.echo(format_table(result))
    if csv_path is not None:
        click.echo(f"wrote {csv_path}")


def check_predictions(pred_dir: Path, gt_dir: Path, sequences: tuple[str, ...] | None) -> None:
    """Fail before scoring when PRED_DIR holds no masks for any scored sequence: the
    protocol would count every object as missed and report a plausible-looking zero."""
    from masklet.data.layouts import list_sequence_dirs
    from masklet.eval import resolve_annotation_root

    if not pred_dir.is_dir():
        return  # run_eval reports it
    if next(pred_dir.rglob("*.png"), None) is None:
        raise CliError(f"no predicted masks in {pred_dir} (expected {pred_dir}/<sequence>/"
                       "NNNNN.png, as `masklet video` writes)")
    names = sequences or [p.name for p in list_sequence_dirs(resolve_annotation_root(gt_dir))]
    if not any((pred_dir / name).is_dir() for name in names):
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise CliError(f"none of the ground-truth sequences ({shown}) has a folder in "
                       f"{pred_dir}")
