"""`masklet demo`: the first-minute experience, offline, on the bundled nano model."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from masklet.cli.common import CliError, check_out_dir, load_model, user_errors

# Clicks on the first frame of the bedroom video, as fractions of its width and height
# (measured at 960x540, so they fit the bundled 480x270 clip and the full-size frames
# alike): three on the girl, negative ones on the boy's head and on the pillow behind
# her. The bundled demo model follows these through the clip; given a box around
# the girl instead, its first mask took in the pillow and the track moved onto the pillow
# (see weights/NANO.md).
CLICKS: tuple[tuple[float, float, int, str], ...] = (
    (420 / 960, 200 / 540, 1, "her skirt"),
    (400 / 960, 320 / 540, 1, "her knee"),
    (430 / 960, 90 / 540, 1, "her face"),
    (255 / 960, 150 / 540, 0, "the boy's head"),
    (600 / 960, 345 / 540, 0, "the pink pillow"),
)
# The overlay plays at half the clip's 24 fps: 30 frames then last 2.5 s, long enough to
# watch the mask follow her.
OVERLAY_FPS = 12.0


@click.command("demo")
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path),
              default=Path("masklet-demo"), show_default=True,
              help="Output folder (replaced if it exists): masks, overlay.mp4, COCO JSON.")
@click.option("--video", type=click.Path(path_type=Path), default=None,
              help="Video to use (default: the bedroom clip shipped with masklet). The clicks "
                   "are placed for that clip, scaled to this video's size.")
@click.option("--synthetic", is_flag=True,
              help="Use a generated video with ground truth instead, and print the IoU.")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Use these weights instead of the bundled nano model.")
@click.option("--model", "preset", default=None, metavar="PRESET",
              help="Preset of --checkpoint (default: inferred from the file; see `masklet info`).")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N, mps or auto.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or messages.")
@user_errors
def demo_cmd(out_dir, video, synthetic, checkpoint, preset, device, quiet):
    """Track the girl in the bundled bedroom clip and write her masks and an overlay video.

    Runs offline on the bundled nano demo model; the outputs go into the --out folder.
    """
    from masklet.build import uses_bundled_weights
    from masklet.bundled import demo_clip
    from masklet.cli.video import _track, _write_outputs
    from masklet.predictor.video import VideoPredictor

    if synthetic and video is not None:
        raise CliError("--synthetic and --video exclude each other")
    if preset is not None and checkpoint is None and not uses_bundled_weights(preset):
        raise CliError(f"--model {preset} needs --checkpoint FILE (no weights are downloaded)")
    check_out_dir(out_dir, overwrite=True)
    model = load_model(preset, checkpoint, device, quiet)
    predictor = VideoPredictor(model, progress=not quiet)
    truth = None
    if not synthetic:
        own_video = video is not None
        video = video if own_video else demo_clip()
        state = predictor.init_state(str(video))
        points, labels = _clicks(state.video_width, state.video_height)
        predictor.add_new_points_or_box(state, 0, 1, points=points, labels=labels)
        name = video.stem if video.is_file() else video.name
        if not quiet:
            _say_prompt(video, state.video_width, state.video_height, points, own_video)
    else:
        from masklet.data.synthetic import SyntheticVideoConfig, generate_video

        clip = generate_video(0, SyntheticVideoConfig(num_frames=48, height=256, width=256))
        state = predictor.init_state(list(clip.frames))
        predictor.add_new_mask(state, 0, 1, clip.masks[0] == 1)
        truth, name = clip.masks == 1, "synthetic"
        if not quiet:
            click.echo("prompted object 1 on frame 0 of a generated 256x256 video with its "
                       "ground-truth mask")
    masks = _track(predictor, state)
    _write_outputs(out_dir, True, name, state, masks, True, True, OVERLAY_FPS, quiet)
    if not quiet:
        where = out_dir.resolve()
        click.echo(f"tracked object 1 over {len(masks)} frames; wrote {where}/: "
                   f"{name}/00000.png ... (masks, pixel value = object id), overlay.mp4 "
                   "(the video with the mask drawn on it), masks_coco.json")
        if truth is not None:
            ious = [_iou(masks[i] == 1, truth[i]) for i in sorted(masks)]
            click.echo(f"mean IoU against the generated ground truth: {np.mean(ious):.3f}")


def _clicks(width: int, height: int) -> tuple[list[list[float]], list[int]]:
    """The demo clicks in pixels of a ``width`` x ``height`` frame, and their labels."""
    points = [[round(fx * width, 1), round(fy * height, 1)] for fx, fy, _, _ in CLICKS]
    return points, [label for _, _, label, _ in CLICKS]


def _say_prompt(video: Path, width: int, height: int, points, own_video: bool) -> None:
    shown = video.name if not own_video else str(video)
    click.echo(f"prompted object 1 (the jumping girl) on frame 0 of {shown} "
               f"({width}x{height}) with {len(points)} clicks:")
    for (x, y), (_, _, label, what) in zip(points, CLICKS):
        sign = "positive" if label else "negative"
        click.echo(f"  {sign} at x={x:g}, y={y:g}: {what}")
    if own_video:
        click.echo("  (these clicks are placed for the bundled bedroom clip; to prompt your "
                   "own video use `masklet video VIDEO --prompt ...`)")


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)
