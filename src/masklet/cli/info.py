"""`masklet info`: the presets, or what a checkpoint file holds and which preset it fits."""

from __future__ import annotations

from pathlib import Path

import click

from masklet.cli.common import user_errors


@click.command("info")
@click.argument("checkpoint", required=False, type=click.Path(path_type=Path))
@user_errors
def info_cmd(checkpoint):
    """List the model presets; with CHECKPOINT, describe it and name the preset it fits."""
    from masklet.checkpoint import closest_preset, read_state_dict
    from masklet.config import PRESETS

    if checkpoint is None:
        click.echo(f"{'preset':<26} {'trunk':<34} {'image size':>10}")
        for name, cfg in PRESETS.items():
            t = cfg.trunk
            trunk = f"Hiera dim {t.embed_dim}, stages {t.stages}"
            click.echo(f"{name:<26} {trunk:<34} {cfg.image_size:>10}")
        return
    state = read_state_dict(checkpoint)
    params = sum(v.numel() for v in state.values())
    dtypes = sorted({str(v.dtype).replace("torch.", "") for v in state.values()})
    best, exact = closest_preset(state)
    click.echo(f"{checkpoint}: {len(state)} tensors, {params / 1e6:.1f} M parameters, "
               f"dtype {', '.join(dtypes)}")
    if exact:
        click.echo(f"fits preset: {best}")
    else:
        click.echo(f"fits no preset exactly; closest: {best}")
