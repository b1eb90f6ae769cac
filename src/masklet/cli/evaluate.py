"""`masklet eval`: J&F of predicted masks against ground truth (DAVIS protocol)."""

from __future__ import annotations

from pathlib import Path

import click

from masklet.cli.common import user_errors


@click.command("eval")
@click.argument("pred_dir", type=click.Path(path_type=Path))
@click.argument("gt_dir", type=click.Path(path_type=Path))
@click.option("--csv", "csv_path", type=click.Path(path_type=Path), default=None,
              help="Also write the per-object scores to this CSV file.")
@click.option("--keep-first-last", is_flag=True,
              help="Also score the first and last annotated frames (the protocol skips them).")
@click.option("--sequence", "sequences", multiple=True, metavar="NAME",
              help="Score only these sequences (repeatable; default: every ground-truth one).")
@click.option("--bound-th", type=float, default=0.008, show_default=True,
              help="Boundary tolerance as a fraction of the image diagonal.")
@user_errors
def eval_cmd(pred_dir, gt_dir, csv_path, keep_first_last, sequences, bound_th):
    """Score PRED_DIR (<seq>/NNNNN.png) against GT_DIR (DAVIS / YouTube-VOS layout)."""
    from masklet.eval import format_table, run_eval

    result = run_eval(pred_dir, gt_dir, csv_path, skip_first_and_last=not keep_first_last,
                      bound_th=bound_th, sequences=sequences or None)
    click.echo(format_table(result))
    if csv_path is not None:
        click.echo(f"wrote {csv_path}")
