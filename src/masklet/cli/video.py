"""`masklet video`: track prompted objects through a video and export the masklets."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import click
import numpy as np

from masklet.cli.checks import FiniteRange, check_new_file
from masklet.cli.common import (
    CliError,
    autocast,
    check_out_dir,
    load_model,
    model_options,
    user_errors,
)
from masklet.cli.prompts import VideoPrompt, parse_inline, read_prompt_file
from masklet.cli.review_csv import ReviewLog

FOLDER_FPS = 24.0  # overlay frame rate for a folder of frames, which records none


@click.command("video")
@click.argument("video", type=click.Path(path_type=Path))
@click.option("--prompt", "inline", multiple=True, metavar="FRAME:OBJ:point=X,Y[:L]",
              help="A prompt: FRAME:OBJ:point=X,Y[:L][;point=...] or FRAME:OBJ:box=X0,Y0,X1,Y1. "
                   "Repeatable.")
@click.option("--prompts", "prompt_file", type=click.Path(path_type=Path), default=None,
              help='JSON list of {"frame", "obj", "points", "labels", "box", "mask"}.')
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), required=True,
              metavar="OUT",
              help="Output folder: <name>/NNNNN.png palette masks (DAVIS layout) and exports.")
@click.option("--overlay/--no-overlay", default=True, show_default=True,
              help="Also write overlay.mp4.")
@click.option("--coco/--no-coco", default=True, show_default=True,
              help="Also write masks_coco.json (COCO RLE per frame and track).")
@click.option("--fps", type=FiniteRange(min=0, min_open=True), default=None,
              help=f"Frame rate of overlay.mp4 (default: the video's own rate; "
                   f"{FOLDER_FPS:g} for a folder of frames).")
@click.option("--stream", is_flag=True,
              help="Stream the video in bounded memory (prompts on frame 0 only).")
@click.option("--motion", is_flag=True,
              help="Motion-aware tracking (SAMURAI): a Kalman filter on each object's box "
                   "helps keep it among look-alikes; off: the official SAM 2 behaviour.")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty output folder.")
@click.option("--compile", "compile_model", is_flag=True,
              help="torch.compile the model first (about a minute; pays off on long videos).")
@click.option("--onnx", "onnx_dir", type=click.Path(path_type=Path), default=None, metavar="DIR",
              help="Track with the ONNX graphs `masklet export` wrote to DIR (the torch-free "
                   "runtime: pip install ./runtime), as without it (with --stream too).")
@click.option("--review-csv", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="Also write review hints: per tracked frame and object the model's "
                   "signals, a 'needs review' score and whether it is flagged.")
@model_options
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or messages.")
@user_errors
def video_cmd(video, inline, prompt_file, out_dir, overlay, coco, fps, stream, motion, overwrite,
              compile_model, onnx_dir, review_csv, preset, checkpoint, random_weights, device,
              dtype, quiet):
    """Track objects through VIDEO (a video file or a folder of JPEG frames).

    Prompts go on any frames; tracking runs forwards from the earliest prompted frame and
    backwards before it. All outputs are written atomically into OUT.
    """
    from masklet.predictor.video import VideoPredictor

    prompts = [parse_inline(p) for p in inline]
    if prompt_file is not None:
        prompts += read_prompt_file(prompt_file)
    if not prompts:
        raise CliError("give at least one --prompt or a --prompts file")
    check_out_dir(out_dir, overwrite)
    if stream and any(p.frame != 0 for p in prompts):
        raise CliError("--stream takes prompts on frame 0 only")
    fps = overlay_fps(video, fps)
    review = None
    if review_csv is not None:
        check_new_file(review_csv, "--review-csv")
        review = ReviewLog({(p.frame, p.obj_id) for p in prompts})
    if onnx_dir is not None:
        _onnx(onnx_dir, video, prompts, out_dir, overwrite, overlay, coco, fps, quiet,
              stream=stream, motion=motion, compile=compile_model,
              model_args=(preset, checkpoint, random_weights, device, dtype), review=review)
        if review is not None:
            review.write(review_csv)
        return
    model = load_model(preset, checkpoint, device, quiet, random_weights)
    if compile_model:
        from masklet.modeling.compile import compile_for_inference

        compile_for_inference(model)
    if stream:
        with autocast(model.device, dtype):
            state, labels = _stream(model, video, prompts, quiet, motion, review)
        objects = len({p.obj_id for p in prompts})
    else:
        predictor = VideoPredictor(model, progress=not quiet, motion=motion)
        with autocast(model.device, dtype):
            state = predictor.init_state(str(video))
            for p in prompts:
                _apply(predictor, state, p)
            labels = _track(predictor, state, review)
        objects = len(state.obj_ids)
    name = Path(video).stem if Path(video).is_file() else Path(video).name
    _write_outputs(out_dir, overwrite, name, state, labels, overlay, coco, fps, quiet)
    if review is not None:
        review.write(review_csv)
    if not quiet:
        click.echo(f"tracked {objects} object(s) over {len(labels)} frames; wrote {out_dir}/")


def _onnx(onnx_dir, video, prompts, out_dir, overwrite, overlay, coco, fps, quiet, *,
          stream, motion, compile, model_args, review) -> None:
    """`masklet video --onnx DIR`: the same outputs, tracked by the torch-free runtime."""
    from masklet.cli import onnx_backend
    from masklet.io import open_frames

    onnx_backend.reject_options(motion=motion, compile=compile)
    onnx_backend.model_options_with_onnx(*model_args)
    labels = onnx_backend.track_video(onnx_dir, video, prompts, quiet, stream, review)
    name = Path(video).stem if Path(video).is_file() else Path(video).name
    _write_outputs(out_dir, overwrite, name, _Frames(open_frames(str(video))), labels, overlay,
                   coco, fps, quiet)
    if not quiet:
        objects = len({p.obj_id for p in prompts})
        click.echo(f"tracked {objects} object(s) over {len(labels)} frames with ONNX Runtime; "
                   f"wrote {out_dir}/")


def overlay_fps(video: Path, fps: float | None) -> float | Fraction:
    """`fps` if given, else the video file's frame rate (29.97 stays 30000/1001), else
    `FOLDER_FPS` for a folder of frames or a file whose rate is unknown."""
    if fps is not None:
        return fps
    if Path(video).is_file():
        import av

        try:
            with av.open(str(video)) as container:
                rate = container.streams.video[0].average_rate
        except (av.FFmpegError, IndexError):
            rate = None  # the reader reports an unreadable video itself
        if rate is not None and rate > 0:
            return Fraction(rate)
    return FOLDER_FPS


def _apply(predictor, state, p: VideoPrompt) -> None:
    if p.mask is not None:
        from masklet.io.images import load_image

        mask = load_image(p.mask)[..., 0] > 0
        if mask.shape != (state.video_height, state.video_width):
            raise CliError(f"mask {p.mask} is {mask.shape[1]}x{mask.shape[0]}, the video is "
                           f"{state.video_width}x{state.video_height}")
        predictor.add_new_mask(state, p.frame, p.obj_id, mask)
        return
    predictor.add_new_points_or_box(
        state, p.frame, p.obj_id, points=p.points or None,
        labels=p.labels or None, box=p.box, clear_old_points=False if not p.box else True)


def _stream(model, video, prompts: list[VideoPrompt], quiet: bool, motion: bool = False,
            review: ReviewLog | None = None):
    """Track with the streaming tracker; returns (the frame source holder, label maps).
    `review` collects the review hints (--review-csv)."""
    from tqdm.auto import tqdm

    from masklet.export import label_map_from_masks
    from masklet.io import open_frames
    from masklet.tracking.streaming import StreamingTracker

    source = open_frames(str(video))
    session = StreamingTracker(model, motion=motion).start(source)
    for p in prompts:
        if p.mask is not None:
            raise CliError("--stream takes click and box prompts")
        session.add_points(p.obj_id, p.points or None, p.labels or None, box=p.box)
    labels: dict[int, np.ndarray] = {}
    with session:
        for frame_idx, obj_ids, logits in tqdm(session, total=session.num_frames,
                                               disable=quiet, desc="stream"):
            masks = (logits[:, 0] > 0).cpu().numpy()
            labels[frame_idx] = label_map_from_masks(dict(zip(obj_ids, masks)))
            if review is not None:
                review.add(frame_idx, obj_ids, masks, session.frame_signals())
    return _Frames(open_frames(str(video))), labels


class _Frames:
    """Just what `_write_outputs` reads from a session: the frame source."""

    def __init__(self, source) -> None:
        self.source = source


def _track(predictor, state, review: ReviewLog | None = None) -> dict[int, np.ndarray]:
    """Label map (uint8 object ids) of every frame; `review` collects the review hints."""
    from masklet.export import label_map_from_masks

    labels: dict[int, np.ndarray] = {}
    first = min(f for obj in state.objects.values() for f in obj.input_frames())
    for reverse in (False, True) if first > 0 else (False,):
        if review is not None:
            review.begin_pass()
        for frame_idx, obj_ids, logits in predictor.propagate_in_video(state, reverse=reverse):
            masks = (logits[:, 0] > 0).cpu().numpy()
            labels[frame_idx] = label_map_from_masks(dict(zip(obj_ids, masks)))
            if review is not None:
                review.add(frame_idx, obj_ids, masks, predictor.frame_signals(state, frame_idx))
    return dict(sorted(labels.items()))


def _write_outputs(out_dir, overwrite, name, state, labels, overlay, coco, fps, quiet):
    from masklet.export import (
        OverlayVideoWriter,
        atomic_dir,
        masks_from_label_map,
        video_masks_to_coco,
        write_json,
    )
    from masklet.export.masks import write_palette_png

    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        seq = tmp / name
        seq.mkdir()
        for frame_idx, label_map in labels.items():
            write_palette_png(seq / f"{frame_idx:05d}.png", label_map)
        if overlay:
            with OverlayVideoWriter(tmp / "overlay.mp4", fps=fps) as writer:
                for frame_idx, label_map in labels.items():
                    writer.write(state.source.get(frame_idx), label_map)
        if coco:
            frames = [masks_from_label_map(labels[i]) for i in sorted(labels)]
            h, w = next(iter(labels.values())).shape
            write_json(tmp / "masks_coco.json",
                       video_masks_to_coco(name, frames, height=h, width=w))
