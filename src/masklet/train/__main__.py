"""``python -m masklet.train``: run training from the command line (or under torchrun).

    python -m masklet.train --model masklet_nano --source synthetic --num-videos 2000 \\
        --steps 20000 --lr 5e-4 --out runs/nano
    torchrun --nproc_per_node 8 -m masklet.train --config finetune.json

``--config`` reads a JSON `TrainConfig` (as written to ``<out>/train_config.json``);
other flags override it. A source is ``KIND[:PATH][@WEIGHT]``, e.g. ``vos:/data/MOSE@3``
or ``sa1b:/data/sa1b@1``; for SA-V, PATH is ``JSON_DIR,FRAMES_DIR``.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import replace

from masklet.train.config import DataSource, TrainConfig
from masklet.train.trainer import run_training


def parse_source(text: str, num_videos: int | None = None) -> DataSource:
    """``KIND[:PATH][@WEIGHT]`` -> DataSource."""
    spec, _, weight = text.partition("@")
    kind, _, path = spec.partition(":")
    frames = None
    if kind == "sav" and "," in path:
        path, frames = path.split(",", 1)
    source = DataSource(kind=kind, path=path or None, weight=int(weight or 1),
                        frames_path=frames)
    if num_videos is not None:
        source = replace(source, num_videos=num_videos)
    return source


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m masklet.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="JSON TrainConfig to start from")
    p.add_argument("--model", help="preset name, e.g. masklet_nano, sam2.1_hiera_b+ or edgetam")
    p.add_argument("--init-checkpoint", help="weights to fine-tune from (.pt / .safetensors)")
    p.add_argument("--source", action="append", help="data source KIND[:PATH][@WEIGHT]")
    p.add_argument("--num-videos", type=int, help="distinct synthetic videos")
    p.add_argument("--synthetic-motion", type=float,
                   help="synthetic object speed, 0..1 (default 1; 0.25 moves like DAVIS)")
    p.add_argument("--out", dest="output_dir", help="output folder")
    p.add_argument("--steps", dest="max_steps", type=int)
    p.add_argument("--batch-size", type=int, help="samples per step over all processes")
    p.add_argument("--frames", dest="num_frames", type=int)
    p.add_argument("--image-size", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--workers", dest="num_workers", type=int)
    p.add_argument("--save-every", type=int)
    p.add_argument("--log-every", type=int)
    p.add_argument("--device")
    p.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")
    p.add_argument("--until", type=int,
                   help="stop after this step (the lr schedule still spans --steps)")
    p.add_argument("--lr", dest="base_lr", type=float)
    p.add_argument("--vision-lr", type=float)
    p.add_argument("--layer-decay", type=float)
    p.add_argument("--warmup", dest="warmup_steps", type=int)
    p.add_argument("--grad-clip", type=float)
    p.add_argument("--mask-weight", type=float, help="focal-loss weight (recipe: 20)")
    p.add_argument("--dice-weight", type=float, help="dice-loss weight (recipe: 1)")
    p.add_argument("--correction-points", dest="num_correction_points", type=int,
                   help="correction clicks per corrected frame (recipe: 7)")
    return p


def build_config(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig the command line describes."""
    config = TrainConfig()
    if args.config:
        with open(args.config, encoding="utf-8") as f:
            config = TrainConfig.from_dict(json.load(f))
    top = {k: getattr(args, k) for k in ("model", "init_checkpoint", "output_dir", "max_steps",
                                         "batch_size", "num_frames", "image_size", "seed",
                                         "num_workers", "save_every", "log_every", "device")}
    config = replace(config, **{k: v for k, v in top.items() if v is not None})
    if args.source:
        config = replace(config, sources=tuple(parse_source(s, args.num_videos)
                                               for s in args.source))
    elif args.num_videos is not None:
        config = replace(config, sources=tuple(
            replace(s, num_videos=args.num_videos) for s in config.sources))
    if args.synthetic_motion is not None:
        config = replace(config, sources=tuple(
            replace(s, motion=args.synthetic_motion) if s.kind == "synthetic" else s
            for s in config.sources))
    optim = {k: getattr(args, k) for k in ("base_lr", "vision_lr", "layer_decay",
                                           "warmup_steps", "grad_clip")}
    config = replace(config, optim=replace(config.optim,
                                           **{k: v for k, v in optim.items() if v is not None}))
    loss = {k: getattr(args, k) for k in ("mask_weight", "dice_weight")}
    config = replace(config, loss=replace(config.loss,
                                          **{k: v for k, v in loss.items() if v is not None}))
    if args.num_correction_points is not None:
        config = replace(config, prompts=replace(
            config.prompts, num_correction_points=args.num_correction_points))
    return replace(config, resume=False) if args.no_resume else config


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = _parser().parse_args(argv)
    result = run_training(build_config(args), until=args.until)
    logging.getLogger("masklet.train").info("finished at step %d; checkpoint %s",
                                            result.final_step, result.checkpoint)


if __name__ == "__main__":
    main()
