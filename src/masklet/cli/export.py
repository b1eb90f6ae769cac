"""`masklet export`: write a model's ONNX graphs for the torch-free runtime."""

from __future__ import annotations

import time
from pathlib import Path

import click

from masklet.cli.common import CliError, CliFailure, check_out_dir, load_model, user_errors


@click.command("export")
@click.option("--model", "preset", default=None, metavar="PRESET",
              help="Model preset or alias, e.g. sam2.1_hiera_tiny, edgetam or masklet_nano (see "
                   "`masklet info`). Default with --checkpoint: the checkpoint's own preset.")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Official SAM 2 / 2.1 .pt file or a .safetensors file. masklet_nano needs "
                   "none (its weights are bundled); other presets need one or --random-weights.")
@click.option("--random-weights", is_flag=True,
              help="Export --model with untrained random weights (no checkpoint): for tests "
                   "and speed measurements; its masks mean nothing.")
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), required=True,
              metavar="DIR",
              help="Output folder for the graphs, constants.npz and manifest.json (created "
                   "atomically; must not exist or be empty).")
@click.option("--opset", type=int, default=None, metavar="N",
              help="ONNX opset of the graphs (default 21; 18 to 23 are supported).")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty output folder.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@user_errors
def export_cmd(preset, checkpoint, random_weights, out_dir, opset, overwrite, quiet):
    """Export a model to ONNX: image encoder, memory attention, decoder, mask prompt and
    memory encoder graphs, with a manifest.json the masklet runtime reads (`--onnx DIR`)."""
    from masklet.onnx import DEFAULT_OPSET, ExportError, check_opset, export_model

    opset = DEFAULT_OPSET if opset is None else opset
    try:
        check_opset(opset)
    except ValueError as exc:
        raise CliError(f"--opset {opset}: {exc}") from None
    if preset is None and checkpoint is None:
        raise CliError("give --model PRESET (with --checkpoint FILE or --random-weights; "
                       "masklet_nano has bundled weights) or --checkpoint FILE")
    check_out_dir(out_dir, overwrite)
    model = load_model(preset, checkpoint, "cpu", quiet=True, random_weights=random_weights)
    if not quiet and random_weights:
        click.echo(f"masklet: warning: exporting {model.config.name} with random weights: its "
                   "masks mean nothing", err=True)
    say = (lambda line: None) if quiet else (lambda line: click.echo(f"  {line}"))
    if not quiet:
        click.echo(f"exporting {model.config.name} ({model.image_size} px, opset {opset}) "
                   f"to {out_dir}")
    start = time.perf_counter()
    try:
        export_model(model, out_dir, opset=opset, overwrite=overwrite, progress=say)
    except ExportError as exc:
        raise CliFailure(str(exc)) from None
    if not quiet:
        click.echo(f"done in {time.perf_counter() - start:.0f} s: {out_dir}/manifest.json")
