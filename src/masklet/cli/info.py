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
        _describe_machine()
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


def _describe_machine() -> None:
    """What `--device auto` picks here and which `--dtype` is the faster on it."""
    import torch

    from masklet.cli.common import resolve_device
    from masklet.tracking.precision import (
        cpu_bf16_features,
        cpu_model,
        recommended_precision,
    )

    device = resolve_device("auto")
    if device.type == "cuda":
        where = f"cuda ({torch.cuda.get_device_name(device)})"
        why = ("the GPU computes in bf16" if torch.cuda.is_bf16_supported()
               else "this GPU has no bf16")
    elif device.type == "cpu":
        where = f"cpu ({cpu_model()}, {torch.get_num_threads()} threads)"
        features = cpu_bf16_features()
        why = (f"the CPU multiplies bf16 natively: {', '.join(features)}" if features else
               "the CPU has neither avx512_bf16 nor AMX: bf16 would be emulated, slower")
    else:
        where, why = device.type, "bf16 is not known to pay on this device"
    dtype = {"bf16": "bfloat16", "fp32": "float32"}[recommended_precision(device)]
    click.echo(f"this machine: torch {torch.__version__}; --device auto picks {where}")
    click.echo(f"faster --dtype here: {dtype} ({why}); float32 gives the official numbers")


def _describe_trunk(trunk) -> str:
    if hasattr(trunk, "stages"):  # Hiera
        return f"Hiera dim {trunk.embed_dim}, stages {trunk.stages}"
    depth = getattr(trunk, "depth", "?")
    return f"{type(trunk).__name__.removesuffix('Config')}, depth {depth}"
