"""`masklet auto` and `masklet auto-video`: masks of everything, without prompts."""

from __future__ import annotations

import re
from pathlib import Path

import click
import numpy as np

from masklet.cli.checks import FiniteRange, check_image_path
from masklet.cli.common import (
    CliError,
    autocast,
    check_out_dir,
    load_model,
    model_options,
    user_errors,
)
from masklet.cli.video import FOLDER_FPS

# The generator's parameter names, as the options that set them (its errors name the former).
OPTION_OF_PARAMETER = {
    "points_per_side": "--points-per-side",
    "points_per_batch": "--points-per-batch",
    "pred_iou_thresh": "--pred-iou-thresh",
    "stability_score_thresh": "--stability-thresh",
    "box_nms_thresh": "--box-nms-thresh",
    "crop_n_layers": "--crop-layers",
    "min_mask_region_area": "--min-area",
    "use_m2m": "--m2m",
    "max_objects": "--max-objects",
}
_PARAMETER = re.compile(r"\b(" + "|".join(OPTION_OF_PARAMETER) + r")\b")

OUT_HELP = "Output folder (created; must not exist or be empty unless --overwrite)."
OVERWRITE_HELP = "Replace a non-empty output folder."
QUIET_HELP = "Print nothing but errors."
UNIT = FiniteRange(0.0, 1.0)


def option_message(text: str) -> str:
    """`text` with the generator's parameter names replaced by the options that set them."""
    return _PARAMETER.sub(lambda m: OPTION_OF_PARAMETER[m.group(1)], text)


def _generator_options(fn):
    options = [
        click.option("--points-per-side", type=click.IntRange(min=1), default=32,
                     show_default=True, help="Prompt a grid of N x N points over the image."),
        click.option("--points-per-batch", type=click.IntRange(min=1), default=64,
                     show_default=True, help="Points run through the model at once (memory)."),
        click.option("--pred-iou-thresh", type=UNIT, default=0.8, show_default=True,
                     help="Keep masks whose predicted IoU is at least this (0..1)."),
        click.option("--stability-thresh", type=UNIT, default=0.95, show_default=True,
                     help="Keep masks whose stability score (IoU of the mask at two "
                          "thresholds) is at least this (0..1)."),
        click.option("--box-nms-thresh", type=UNIT, default=0.7, show_default=True,
                     help="Drop a mask whose box overlaps a better one's by more than this "
                          "IoU (0..1)."),
        click.option("--crop-layers", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Also run on 2x2, 4x4, ... crops for small objects (0: whole image "
                          "only; each layer costs more)."),
        click.option("--min-area", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Fill holes / remove specks up to this area (low-res pixels)."),
        click.option("--m2m", is_flag=True, help="Official mask-to-mask refinement pass."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _generator(model, kw):
    from masklet.amg import AutomaticMaskGenerator

    try:
        return AutomaticMaskGenerator(
            model, points_per_side=kw["points_per_side"], points_per_batch=kw["points_per_batch"],
            pred_iou_thresh=kw["pred_iou_thresh"], stability_score_thresh=kw["stability_thresh"],
            box_nms_thresh=kw["box_nms_thresh"], crop_n_layers=kw["crop_layers"],
            min_mask_region_area=kw["min_area"], use_m2m=kw["m2m"], output_mode="binary_mask")
    except ValueError as exc:
        raise CliError(option_message(" ".join(str(exc).split()))) from None


@click.command("auto")
@click.argument("image", type=click.Path(path_type=Path))
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), required=True,
              metavar="OUT",
              help=OUT_HELP)
@click.option("--overwrite", is_flag=True, help=OVERWRITE_HELP)
@_generator_options
@model_options
@click.option("-q", "--quiet", is_flag=True, help=QUIET_HELP)
@user_errors
def auto_cmd(image, out_dir, overwrite, preset, checkpoint, random_weights, device, dtype, quiet,
             **kw):
    """Every object of IMAGE: masks.json (COCO RLE, official record fields), labels.png,
    overlay.png."""
    from masklet.export import atomic_dir, image_masks_to_coco, label_map_from_masks, write_json
    from masklet.export.masks import write_palette_png
    from masklet.export.overlay import write_overlay_png
    from masklet.io.images import load_image

    check_image_path(image)
    check_out_dir(out_dir, overwrite)
    rgb = load_image(image)
    model = load_model(preset, checkpoint, device, quiet, random_weights)
    with autocast(model.device, dtype):
        records = _generator(model, kw).generate(rgb)
    records.sort(key=lambda r: -r["area"])
    masks = {i + 1: r["segmentation"] for i, r in enumerate(records[:255])}
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        labels = label_map_from_masks(masks) if masks else np.zeros(rgb.shape[:2], np.uint8)
        write_palette_png(tmp / "labels.png", labels)
        write_overlay_png(tmp / "overlay.png", rgb, labels)
        coco = image_masks_to_coco([{"file_name": Path(image).name,
                                     "height": rgb.shape[0], "width": rgb.shape[1],
                                     "masks": [r["segmentation"] for r in records],
                                     "scores": [r["predicted_iou"] for r in records]}])
        write_json(tmp / "masks.json", coco)
    if not quiet:
        click.echo(f"{len(records)} masks; wrote {out_dir}/")


@click.command("auto-video")
@click.argument("video", type=click.Path(path_type=Path))
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), required=True,
              metavar="OUT",
              help=OUT_HELP)
@click.option("--every", type=click.IntRange(min=1), default=30, show_default=True,
              help="Look for new objects every N frames.")
@click.option("--max-objects", type=click.IntRange(1, 255), default=20, show_default=True,
              help="Track at most this many objects (masks are 8-bit: 255 at most).")
@click.option("--fps", type=FiniteRange(min=0, min_open=True), default=None,
              help=f"Frame rate of overlay.mp4 (default: the video's own rate; "
                   f"{FOLDER_FPS:g} for a folder of frames).")
@click.option("--overwrite", is_flag=True, help=OVERWRITE_HELP)
@_generator_options
@model_options
@click.option("-q", "--quiet", is_flag=True, help=QUIET_HELP)
@user_errors
def auto_video_cmd(video, out_dir, every, max_objects, fps, overwrite, preset, checkpoint,
                   random_weights, device, dtype, quiet, **kw):
    """Find objects on the first frame and every N frames after, and track them all."""
    from masklet.cli.video import _write_outputs, overlay_fps

    check_out_dir(out_dir, overwrite)
    fps = overlay_fps(video, fps)
    model = load_model(preset, checkpoint, device, quiet, random_weights)
    state, labels = track_auto_video(model, video, every, max_objects, dtype, kw)
    name = Path(video).stem if Path(video).is_file() else Path(video).name
    _write_outputs(out_dir, overwrite, name, state, labels, True, True, fps, quiet)
    if not quiet:
        click.echo(f"tracked {len(state.obj_ids)} object(s) over {len(labels)} frames; "
                   f"wrote {out_dir}/")


def track_auto_video(model, video, every: int, max_objects: int, dtype: str, kw: dict):
    """Discover and track every object of `video`: (the session, {frame: [H, W] uint8 label
    map}); `kw` holds the generator options of `masklet auto-video` by parameter name."""
    from masklet.amg.video import DiscoveryConfig, track_everything
    from masklet.export import label_map_from_masks
    from masklet.predictor.video import VideoPredictor

    predictor = VideoPredictor(model, progress=False)
    cfg = DiscoveryConfig(every=every, max_objects=max_objects)
    labels: dict[int, np.ndarray] = {}
    with autocast(model.device, dtype):
        state = predictor.init_state(str(video))
        frames = track_everything(predictor, _generator(model, kw), state, cfg)
        for frame_idx, obj_ids, logits in frames:
            masks = (logits[:, 0] > 0).cpu().numpy()
            labels[frame_idx] = label_map_from_masks(dict(zip(obj_ids, masks))) if obj_ids \
                else None
    hw = (state.video_height, state.video_width)
    return state, {i: (m if m is not None else np.zeros(hw, np.uint8)) for i, m in labels.items()}
