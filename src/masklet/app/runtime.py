"""The model side of the app: predictor state per video, rebuilt from stored prompts.

The database is the truth; a runtime is a cache that can always be rebuilt by replaying a
video's active prompts (after a restart, or when it was evicted). A rebuilt runtime
replays every prompt as a first prompt on its frame, so a correction that was made on a
tracked frame (conditioned on the tracking memory at the time) may come out slightly
different in it; the masks the user saw are the ones stored. Every model
call happens under `ModelHost.lock`: one model call at a time per process, so clicks
on one video interleave with tracking of another at frame granularity.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Iterator

import numpy as np
import torch

from masklet.app.maskcodec import decode_rle
from masklet.app.media import FrameReader, Media, ReaderSource
from masklet.app.store import Action, effective_prompts
from masklet.modeling.sam2 import SAM2Model
from masklet.predictor.image import ImagePredictor
from masklet.predictor.prompts import mask_prompt
from masklet.predictor.video import VideoPredictor
from masklet.tracking.signals import FrameSignals
from masklet.tracking.state import FrameOutput
from masklet.tracking.step import memory_of_prompted

FrameMasks = dict[int, np.ndarray]  # object id -> [H, W] bool


class ModelBusy(Exception):
    """The model lock stayed taken past the wait budget (the server answers 503).

    Not an `AppError`: the editing code drops a half-updated runtime on any other error.
    """


class ModelHost:
    """The model, the video predictor the app drives, and the one-call-at-a-time lock.

    Corrections on tracked frames are kept as conditioning frames
    (``add_all_frames_to_correct_as_cond``) so that tracking again keeps them: the
    data-engine loop is click, track, correct, track again.

    `motion_video` is the same predictor with motion-aware tracking (SAMURAI) on, for the
    jobs that ask for it. Both wrap the one model (no second copy of the weights); a
    predictor holds no tracking state (that lives in each video's session, the motion
    filters included), so the two can drive the same sessions.
    """

    def __init__(self, model: SAM2Model, *, feature_cache_size: int = 4,
                 bfloat16: bool = False, wait_s: float | None = None) -> None:
        self.model = model
        self.wait_s = wait_s  # how long a request waits for the lock (None: forever)
        self.feature_cache_size = feature_cache_size
        self.bfloat16 = bfloat16
        self.video = VideoPredictor(model, add_all_frames_to_correct_as_cond=True, progress=False)
        self.motion_video = VideoPredictor(model, add_all_frames_to_correct_as_cond=True,
                                           progress=False, motion=True)
        self.lock = threading.Lock()

    @contextlib.contextmanager
    def call(self, bounded: bool = True) -> Iterator[None]:
        """One model call: the lock, no autograd, and bf16 autocast when asked for.

        A request's call (`bounded`) waits at most `wait_s` for the lock and then raises
        `ModelBusy` instead of hanging; a tracking step waits as long as it takes (every
        other holder is bounded: points per prompt are limited, tracking goes frame by
        frame).
        """
        timeout = self.wait_s if bounded and self.wait_s is not None else -1
        if not self.lock.acquire(timeout=timeout):
            raise ModelBusy(f"the model is busy with other work; try again (waited "
                            f"{self.wait_s:g} s, --model-wait-s)")
        try:
            with torch.inference_mode():
                if self.bfloat16:
                    with torch.autocast(device_type=self.model.device.type,
                                        dtype=torch.bfloat16):
                        yield
                else:
                    yield
        finally:
            self.lock.release()


def _masks_of(obj_ids: list[int], logits: torch.Tensor) -> FrameMasks:
    """[N, 1, H, W] logits of `obj_ids` -> {id: [H, W] bool}."""
    masks = (logits[:, 0] > 0).cpu().numpy()
    return {obj_id: masks[i] for i, obj_id in enumerate(obj_ids)}


class VideoRuntime:
    """A `VideoSession` of one video plus how to replay stored prompts into it."""

    tracks = True

    def __init__(self, host: ModelHost, media: Media, frames: FrameReader) -> None:
        self.host = host
        self.media = media
        self.frames = frames
        self.session = None
        self.last_job: int | None = None  # the tracking job whose memory the session holds

    def build(self, actions: list[Action]) -> None:
        """Open the video and replay every active prompt (grouped per object)."""
        with self.host.call():
            # Frames come through the reader: the files the video was opened with, each
            # checked when it is read.
            self.session = self.host.video.init_state(
                ReaderSource(self.frames), feature_cache_size=self.host.feature_cache_size)
        for obj in sorted({a.obj for a in actions}):
            self.replay_object(obj, [a for a in actions if a.obj == obj])

    def _apply(self, action: Action) -> np.ndarray:
        """The action's object's new mask [H, W] bool (the other objects' are not needed)."""
        predictor, state = self.host.video, self.session
        if action.kind == "mask":
            mask = decode_rle(action.mask_rle, self.media.height, self.media.width)
            _, ids, logits = predictor.add_new_mask(state, action.frame, action.obj, mask)
        else:
            box = action.box if action.kind == "box" else None
            _, ids, logits = predictor.add_new_points_or_box(
                state, action.frame, action.obj, points=action.points or None,
                labels=action.labels or None, box=box, clear_old_points=box is not None)
        return (logits[ids.index(action.obj), 0] > 0).cpu().numpy()

    def apply(self, action: Action) -> np.ndarray:
        """Add one click / box / mask action; returns its object's new mask on that frame."""
        with self.host.call():
            return self._apply(action)

    def replay_object(self, obj: int, actions: list[Action]) -> FrameMasks:
        """Forget `obj` and re-add its active prompts; returns {frame: mask} of its prompts."""
        self.drop_object(obj)
        shown: FrameMasks = {}
        for frame in sorted({a.frame for a in actions}):
            for action in effective_prompts([a for a in actions if a.frame == frame]):
                with self.host.call():
                    shown[frame] = self._apply(action)
        return shown

    def refresh(self, obj: int, frame: int, actions: list[Action]) -> np.ndarray | None:
        """Make `obj`'s prompts on `frame` what `actions` (all of its active ones) say.

        Only that frame is redone (other frames keep their features and outputs); an
        object left with no prompt anywhere is forgotten. Returns its mask on the frame,
        or None when no prompt is left there.
        """
        if not any(effective_prompts([a for a in actions if a.frame == f])
                   for f in {a.frame for a in actions}):
            self.drop_object(obj)
            return None
        if obj not in self.session.objects:
            return self.replay_object(obj, actions).get(frame)
        with self.host.call():
            self.host.video.clear_all_prompts_in_frame(self.session, frame, obj,
                                                       need_output=False)
            state = self.session.objects[obj]
            # Replay as the prompts were first made. On a frame the tracker reached, the
            # first correction click was seeded with the tracked output, which clearing
            # keeps (frames_tracked still holds the frame): keep it, so that undo / redo
            # give the model the same state as before. An output left over from cleared
            # prompts (the frame is no longer marked tracked) would wrongly seed the first
            # re-added click: without it the frame is redone as on first prompting.
            if frame not in state.frames_tracked:
                state.non_cond_outputs.pop(frame, None)
        mask = None
        for action in effective_prompts([a for a in actions if a.frame == frame]):
            with self.host.call():
                mask = self._apply(action)
        return mask

    def memory_frames(self, start: int, reverse: bool) -> list[int]:
        """The frames just before `start` (in the pass's direction) whose memory tracking
        `start` attends to."""
        config = self.host.model.config
        reach = self.host.model.num_maskmem * config.memory_temporal_stride_for_eval
        if reverse:
            return list(range(start + 1, min(start + reach, self.media.num_frames - 1) + 1))
        return list(range(max(start - reach, 0), start))

    def seed_memory(self, masks: dict[int, FrameMasks], reverse: bool) -> None:
        """Tracking memory of frames tracked earlier, rebuilt from their stored masks.

        After a restart the session no longer holds what an interrupted job had tracked;
        resuming it then starts from these memories (each mask encoded as a given mask,
        as `add_new_mask` does, but kept as an ordinary tracked frame) instead of tracking
        every frame again. The masks are binary, so the resumed frames can differ slightly
        from an uninterrupted run. Frames where an object has prompts are left alone.
        A seeded frame keeps the given mask's predicted IoU (1, as `use_mask_as_output`
        scores it) so that motion-aware tracking counts it as a reliable memory; its
        motion filter is not rebuilt: a resumed motion-aware job starts a fresh one.
        """
        model, session = self.host.model, self.session
        for frame in sorted(masks):
            with self.host.call(bounded=False):
                feats = session.frame_features(model, frame)
                for obj_id, mask in masks[frame].items():
                    obj = session.objects.get(obj_id)
                    if obj is None or frame in obj.cond_outputs or frame in obj.pending_cond:
                        continue
                    prompt = mask_prompt(mask, image_size=model.image_size,
                                         device=session.device)
                    sam = model.use_mask_as_output(feats.image_embed,
                                                   feats.high_res_feats or None, prompt)
                    out = FrameOutput(sam.low_res_masks, sam.obj_ptr, sam.object_score_logits,
                                      iou_score=sam.ious[:, 0])
                    out.maskmem_features = memory_of_prompted(model, feats, out)
                    obj.non_cond_outputs[frame] = out
                    obj.frames_tracked[frame] = reverse

    def frame_signals(self, frame: int) -> dict[int, FrameSignals]:
        """Each object's model signals on a frame just tracked (for the review hints)."""
        with self.host.call(bounded=False):
            return self.host.video.frame_signals(self.session, frame)

    def drop_object(self, obj: int) -> None:
        if self.session is not None and obj in self.session.objects:
            with self.host.call():
                self.host.video.remove_object(self.session, obj, need_output=False)

    def prepare(self, frame: int) -> None:
        with self.host.call():
            self.session.frame_features(self.host.model, frame)

    def has_prompts(self) -> bool:
        return self.session is not None and any(o.input_frames() for o in
                                                self.session.objects.values())

    def first_prompted_frame(self) -> int:
        return min(f for o in self.session.objects.values() for f in o.input_frames())

    def track(self, start: int, max_frames: int | None, reverse: bool, motion: bool = False
              ) -> Iterator[tuple[int, FrameMasks]]:
        """Propagate; each step runs under the model lock, so other work interleaves.

        `motion`: motion-aware (SAMURAI). Prompts were decoded as plain SAM 2 (those are
        the masks the user saw and that are stored), so each object's motion filter starts
        on the first tracked frame after its prompt; the filters live in this video's
        session, per object and frame, never shared with another video.
        """
        predictor = self.host.motion_video if motion else self.host.video
        with self.host.call(bounded=False):
            steps = predictor.propagate_in_video(self.session, start, max_frames, reverse)
        try:
            while True:
                with self.host.call(bounded=False):
                    step = next(steps, None)
                if step is None:
                    return
                frame, ids, logits = step
                yield frame, _masks_of(ids, logits)
        finally:
            steps.close()

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None


class ImageRuntime:
    """Independent images: each mask is a pure function of that image's prompts.

    A box or clicks give `ImagePredictor.predict` (several candidates for a lone click,
    the best-scored kept). An imported mask is kept as given; clicks after it replace it
    with the clicks' prediction. Image embeddings are kept for the `cache_size` most
    recently used images.
    """

    tracks = False

    def __init__(self, host: ModelHost, media: Media, frames: FrameReader,
                 cache_size: int = 4) -> None:
        self.host = host
        self.media = media
        self.frames = frames
        self.cache_size = cache_size
        self._embedded: OrderedDict[int, ImagePredictor] = OrderedDict()

    def build(self, actions: list[Action]) -> None:
        """Nothing to replay: masks are recomputed from prompts when they change."""

    def _predictor(self, frame: int) -> ImagePredictor:
        predictor = self._embedded.get(frame)
        if predictor is None:
            predictor = ImagePredictor(self.host.model)
            predictor.set_image(self.frames.rgb(frame))
            self._embedded[frame] = predictor
            while len(self._embedded) > self.cache_size:
                self._embedded.popitem(last=False)
        self._embedded.move_to_end(frame)
        return predictor

    def predict(self, frame: int, actions: list[Action]) -> tuple[np.ndarray | None, float | None]:
        """(mask [H, W] bool or None when there is no prompt, predicted IoU or None)."""
        prompts = effective_prompts(actions)
        if not prompts:
            return None, None
        if prompts[-1].kind == "mask":
            w, h = self.media.frame_sizes[frame]
            return decode_rle(prompts[-1].mask_rle, h, w), None
        box = next((a.box for a in prompts if a.kind == "box"), None)
        points = [p for a in prompts if a.kind != "mask" for p in (a.points or [])]
        labels = [v for a in prompts if a.kind != "mask" for v in (a.labels or [])]
        multi = len(points) == 1 and box is None
        with self.host.call():
            predictor = self._predictor(frame)
            masks, ious, _ = predictor.predict(
                np.asarray(points, dtype=np.float64) if points else None,
                np.asarray(labels) if labels else None,
                None if box is None else np.asarray(box, dtype=np.float64),
                multimask_output=multi)
        best = int(np.argmax(ious))
        return masks[best].astype(bool), float(ious[best])

    def prepare(self, frame: int) -> None:
        with self.host.call():
            self._predictor(frame)

    def close(self) -> None:
        self._embedded.clear()
