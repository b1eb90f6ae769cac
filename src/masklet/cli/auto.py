"""`masklet auto` and `masklet auto-video`: masks of everything, without prompts."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from masklet.cli.common import autocast, check_out_dir, load_model, model_options, user_errors


def _generator_options(fn):
    options = [
        click.option("--points-per-side", type=int, default=32, show_default=True),
        click.option("--points-per-batch", type=int, default=64, show_default=True),
        click.option("--pred-iou-thresh", type=float, default=0.8, show_default=True),
        click.option("--stability-thresh", type=float, default=0.95, show_default=True),
        click.option("--box-nms-thresh", type=float, default=0.7, show_default=True),
        click.option("--crop-layers", type=int, default=0, show_default=True),
        click.option("--min-area", type=int, default=0, show_default=True,
                     help="Fill holes / remove specks up to this area (low-res pixels)."),
        click.option("--m2m", is_flag=True, help="Official mask-to-mask refinement pass."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _generator(model, kw):
    from masklet.amg import AutomaticMaskGenerator

    return AutomaticMaskGenerator(
        model, points_per_side=kw["points_per_side"], points_per_batch=kw["points_per_batch"],
        pred_iou_thresh=kw["pred_iou_thresh"], stability_score_thresh=kw["stability_thresh"],
        box_nms_thresh=kw["box_nms_thresh"], crop_n_layers=kw["crop_layers"],
        min_mask_region_area=kw["min_area"], use_m2m=kw["m2m"], output_mode="binary_mask")


@click.command("auto")
@click.argument("image", type=click.Path(path_type=Path))
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), required=True)
@click.option("--overwrite", is_flag=True)
@_generator_options
@model_options
@click.option("-q", "--quiet", is_flag=True)
@user_errors
def auto_cmd(image, out_dir, overwrite, preset, checkpoint, device, dtype, quiet, **kw):
    """Every object of IMAGE: masks.json (COCO RLE, official record fields), labels.png,
    overlay.png."""
    from masklet.export import atomic_dir, image_masks_to_coco, label_map_from_masks, write_json
    from masklet.export.masks import write_palette_png
    from masklet.export.overlay import write_overlay_png
    from masklet.io.images import load_image

    check_out_dir(out_dir, overwrite)
    rgb = load_image(image)
    model = load_model(preset, checkpoint, device, quiet)
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
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), required=True)
@click.option("--every", type=int, default=30, show_default=True,
              help="Look for new objects every N frames.")
@click.option("--max-objects", type=int, default=20, show_default=True)
@click.option("--fps", type=float, default=24.0, show_default=True)
@click.option("--overwrite", is_flag=True)
@_generator_options
@model_options
@click.option("-q", "--quiet", is_flag=True)
@user_errors
def auto_video_cmd(video, out_dir, every, max_objects, fps, overwrite, preset, checkpoint,
                   device, dtype, quiet, **kw):
    """Find objects on the first frame and every N frames after, and track them all."""
    from masklet.amg.video import DiscoveryConfig, track_everything
    from masklet.cli.video import _write_outputs
    from masklet.export import label_map_from_masks
    from masklet.predictor.video import VideoPredictor

    check_out_dir(out_dir, overwrite)
    model = load_model(preset, checkpoint, device, quiet)
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
    labels = {i: (m if m is not None else np.zeros(hw, np.uint8)) for i, m in labels.items()}
    name = Path(video).stem if Path(video).is_file() else Path(video).name
    _write_outputs(out_dir, overwrite, name, state, labels, True, True, fps, quiet)
    if not quiet:
        click.echo(f"tracked {len(state.obj_ids)} object(s) over {len(labels)} frames; "
                   f"wrote {out_dir}/")
