"""`masklet info`: the presets, or what a checkpoint file holds and which preset it fits."""

from __future__ import annotations

from pathlib import Path

import click

from masklet.cli.common import CliFailure, one_line, user_errors


@click.command("info")
@click.argument("checkpoint", required=False,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@user_errors
def info_cmd(checkpoint):
    """List the model presets; with CHECKPOINT, describe it and name the preset it fits."""
    from masklet.checkpoint import CheckpointError, closest_preset, read_state_dict

    if checkpoint is None:
        _list_presets()
        return
    try:
        state = read_state_dict(checkpoint)
    except CheckpointError as exc:  # the file is the answer's subject: the check failed
        raise CliFailure(one_line(exc)) from None
    params = sum(v.numel() for v in state.values())
    dtypes = sorted({str(v.dtype).replace("torch.", "") for v in state.values()})
    best, exact = closest_preset(state)
    click.echo(f"{checkpoint}: {len(state)} tensors, {params / 1e6:.1f} M parameters, "
               f"dtype {', '.join(dtypes)}")
    if exact:
        click.echo(f"fits preset: {best}")
    else:
        click.echo(f"fits no preset exactly; closest: {best}")


def _list_presets() -> None:
    """One row per preset, with the short names (aliases) --model also takes for it."""
    from masklet.config import ALIASES, PRESETS

    aliases: dict[str, list[str]] = {}
    for alias, target in ALIASES.items():
        aliases.setdefault(target, []).append(alias)
    click.echo(f"{'preset':<24} {'trunk':<36} {'image size':>10}  aliases")
    for name, cfg in PRESETS.items():
        trunk = _describe_trunk(cfg.trunk)
        click.echo(f"{name:<24} {trunk:<36} {cfg.image_size:>10}  "
                   f"{', '.join(aliases.get(name, [])) or '-'}")
    click.echo("--model takes a preset or any of its aliases.")


def _describe_trunk(trunk) -> str:
    if hasattr(trunk, "stages"):  # Hiera
        return f"Hiera dim {trunk.embed_dim}, stages {trunk.stages}"
    depth = getattr(trunk, "depth", "?")
    return f"{type(trunk).__name__.removesuffix('Config')}, depth {depth}"
