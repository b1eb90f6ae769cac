"""`masklet image`: masks for clicks and/or a box on one image."""

from __future__ import annotations

import contextlib
from pathlib import Path

import click
import numpy as np

from masklet.cli.checks import check_image_path
from masklet.cli.common import (
    CliError,
    autocast,
    check_out_dir,
    load_model,
    model_options,
    parse_floats,
    parse_point,
    user_errors,
)


@click.command("image")
@click.argument("image", type=click.Path(path_type=Path))
@click.option("-p", "--point", "points", multiple=True, metavar="X,Y[:L]",
              help="A click in pixels; L=1 positive (default), L=0 negative. Repeatable.")
@click.option("-b", "--box", default=None, metavar="X0,Y0,X1,Y1", help="A box in pixels.")
@click.option("--multimask/--single-mask", default=None,
              help="Three candidate masks (default for a single click) or one.")
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), required=True,
              metavar="OUT",
              help="Output folder (created; must not exist or be empty).")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty output folder.")
@click.option("--onnx", "onnx_dir", type=click.Path(path_type=Path), default=None, metavar="DIR",
              help="Run on the ONNX graphs `masklet export` wrote to DIR (torch-free runtime: "
                   "pip install ./runtime) instead of building a PyTorch model.")
@model_options
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@user_errors
def image_cmd(image, points, box, multimask, out_dir, overwrite, onnx_dir, preset, checkpoint,
              random_weights, device, dtype, quiet):
    """Segment the object at the given clicks / box of IMAGE.

    Writes mask.png (palette PNG; with --multimask mask_0.png .. mask_2.png, best first),
    overlay.png and masks.json (COCO RLE with scores) into OUT, atomically.
    """
    from masklet.export import atomic_dir, image_masks_to_coco, write_json
    from masklet.export.masks import write_palette_png
    from masklet.export.overlay import write_overlay_png
    from masklet.io.images import load_image
    from masklet.predictor.image import ImagePredictor

    if not points and box is None:
        raise CliError("give at least one --point or a --box")
    check_image_path(image)
    check_out_dir(out_dir, overwrite)
    rgb = load_image(image)
    if onnx_dir is not None:
        from masklet.cli import onnx_backend

        onnx_backend.model_options_with_onnx(preset, checkpoint, random_weights, device, dtype)
        predictor, precision = onnx_backend.image_predictor(onnx_dir), contextlib.nullcontext()
    else:
        model = load_model(preset, checkpoint, device, quiet, random_weights)
        predictor, precision = ImagePredictor(model), autocast(model.device, dtype)
    coords = labels = None
    if points:
        parsed = [parse_point(p) for p in points]
        coords = np.array([[x, y] for x, y, _ in parsed], dtype=np.float32)
        labels = np.array([label for _, _, label in parsed], dtype=np.int64)
    box_arr = None if box is None else np.array(parse_floats(box, 4, "box"), dtype=np.float32)
    if multimask is None:
        multimask = box is None and len(points) == 1
    with precision:
        predictor.set_image(rgb)
        masks, scores, _ = predictor.predict(coords, labels, box_arr, multimask_output=multimask)
    order = np.argsort(-scores)
    masks, scores = masks[order] > 0.5, scores[order]
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        names = ["mask.png"] if len(masks) == 1 else [f"mask_{i}.png" for i in range(len(masks))]
        for name, mask in zip(names, masks):
            write_palette_png(tmp / name, {1: mask})
        write_overlay_png(tmp / "overlay.png", rgb, {1: masks[0]})
        coco = image_masks_to_coco([{"file_name": Path(image).name, "masks": list(masks),
                                     "scores": [float(s) for s in scores]}])
        write_json(tmp / "masks.json", coco)
    if not quiet:
        for name, mask, score in zip(names, masks, scores):
            click.echo(f"{name}: predicted IoU {score:.3f}, area {int(mask.sum())} px")
        click.echo(f"wrote {out_dir}/")
