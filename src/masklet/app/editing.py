"""Prompt editing: clicks, boxes, clears, mask imports, undo and redo.

Every edit follows one order so that a failure leaves nothing half-done: validate, compute
the new masks with the model (the runtime is dropped if that fails), then write the
actions, the masks, the version bump and the measures in one transaction. The runtime is
also dropped when the transaction fails: it is rebuilt from the database on next use.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from masklet.app import store
from masklet.app.errors import AppError, conflict
from masklet.app.maskcodec import decode_rle, encode_rle
from masklet.app.media import Media
from masklet.app.runtime import ImageRuntime
from masklet.app.store import Action
from masklet.predictor.prompts import PromptError

if TYPE_CHECKING:
    from masklet.app.service import AnnotationService

# (frame, object) -> its new prompt mask there, or None when no prompt is left there.
MaskChanges = dict[tuple[int, int], np.ndarray | None]


def _numbers(value, what: str) -> list[float]:
    try:
        out = [float(v) for v in value]
    except (TypeError, ValueError):
        raise AppError(400, f"{what} must be numbers") from None
    if not all(np.isfinite(out)):
        raise AppError(400, f"{what} must be finite numbers")
    return out


def check_prompt(points, labels, box, width: int, height: int
                 ) -> tuple[list[list[float]] | None, list[int] | None, list[float] | None]:
    """Validated clicks ([[x, y], ...] with labels 1/0) and box [x0, y0, x1, y1], in pixels."""
    if not points and box is None:
        raise AppError(400, "give points (with labels) or a box")
    pts = [_numbers(p, "a point") for p in points or []]
    labs = list(labels or [])
    if any(len(p) != 2 for p in pts):
        raise AppError(400, "each point must be [x, y]")
    if len(labs) != len(pts):
        raise AppError(400, f"{len(pts)} point(s) but {len(labs)} label(s)")
    if any(lab not in (0, 1) or isinstance(lab, bool) for lab in labs):
        raise AppError(400, "labels must be 1 (positive) or 0 (negative)")
    corners = [] if box is None else [_numbers(box, "the box")]
    if box is not None:
        if len(corners[0]) != 4:
            raise AppError(400, "a box must be [x0, y0, x1, y1]")
        x0, y0, x1, y1 = corners[0]
        if x1 < x0 or y1 < y0:
            raise AppError(400, "a box needs x0 <= x1 and y0 <= y1")
        corners = [[x0, y0], [x1, y1]]
    for x, y in pts + corners:
        if not (0 <= x <= width and 0 <= y <= height):
            raise AppError(400, f"point ({x:g}, {y:g}) lies outside the {width}x{height} frame")
    return pts or None, labs or None, (None if box is None else corners[0] + corners[1])


class PromptEditor:
    """The prompt-changing operations of an `AnnotationService`."""

    def __init__(self, svc: AnnotationService) -> None:
        self.svc = svc

    # -------------------------------------------------------------- operations
    def add(self, video_id: int, frame: int, obj: int, *, points=None, labels=None, box=None,
            expected_version: int | None = None) -> dict:
        """A click (or several) or a box for one object on one frame."""
        svc = self.svc
        with svc.locked(video_id, expected_version):
            media = svc.check_frame(video_id, frame)
            svc.object_row(video_id, obj)
            w, h = media.frame_size(frame)
            pts, labs, box = check_prompt(points, labels, box, w, h)
            self._check_point_limits(video_id, frame, obj, len(pts or ()))
            kind = "box" if box is not None else "point"
            action = Action(0, 0, frame, obj, kind, pts, labs, box, None, time.time())
            mask, score = self._compute_added(video_id, media, action)
            clicks = 1 if kind == "box" else len(pts)
            version = self._commit(video_id, [action], {(frame, obj): mask}, kind, clicks)
        svc.changed(video_id, version, "prompt")
        return svc.frame_result(video_id, frame, version, action.id, score, obj)

    def clear(self, video_id: int, frame: int, obj: int,
              expected_version: int | None = None) -> dict:
        """Remove one object's prompts on one frame (one undo step)."""
        svc = self.svc
        with svc.locked(video_id, expected_version) as row:
            svc.check_frame(video_id, frame)
            svc.object_row(video_id, obj)
            current = store.active_actions(svc.db, video_id, obj=obj, frame=frame)
            if not store.effective_prompts(current):
                # Nothing to clear: nothing is stored, the frame is answered as it is.
                return svc.frame_result(video_id, frame, row["version"], None, None, obj)
            action = Action(0, 0, frame, obj, "clear", None, None, None, None, time.time())
            after = store.active_actions(svc.db, video_id, obj=obj) + [action]
            changes = self._recompute(video_id, {(frame, obj)}, after)
            version = self._commit(video_id, [action], changes, "clear", 0)
        svc.changed(video_id, version, "prompt")
        return svc.frame_result(video_id, frame, version, action.id, None, obj)

    def import_masks(self, video_id: int, frame: int, masks: dict[int, np.ndarray],
                     create: bool, expected_version: int | None = None) -> dict:
        """Masks given as prompts on one frame ({object id: [H, W] bool}), one undo step.

        With `create`, objects that do not exist yet are created with default names.
        """
        svc = self.svc
        with svc.locked(video_id, expected_version):
            media = svc.check_frame(video_id, frame)
            w, h = media.frame_size(frame)
            existing = {o["id"] for o in store.objects(svc.db, video_id)}
            for obj, mask in masks.items():
                if mask.shape != (h, w):
                    raise AppError(400, f"the mask is {mask.shape[1]}x{mask.shape[0]}, "
                                        f"frame {frame} is {w}x{h}")
                if obj not in existing and not create:
                    raise AppError(404, f"video {video_id} has no object {obj}")
            actions, changes = [], {}
            for obj, mask in sorted(masks.items()):
                rle, _ = encode_rle(mask)
                action = Action(0, 0, frame, obj, "mask", None, None, None, rle, time.time())
                self._compute_added(video_id, media, action)  # conditions the tracker
                changes[(frame, obj)] = mask  # shown exactly as imported
                actions.append(action)
            new = sorted(set(masks) - existing)
            version = self._commit(video_id, actions, changes, "mask", 0, new_objects=new)
        svc.changed(video_id, version, "import")
        return svc.frame_result(video_id, frame, version, actions[-1].id, None,
                                actions[0].obj if len(actions) == 1 else None)

    def undo(self, video_id: int, expected_version: int | None = None) -> dict:
        return self._undo_redo(video_id, expected_version, redo=False)

    def redo(self, video_id: int, expected_version: int | None = None) -> dict:
        return self._undo_redo(video_id, expected_version, redo=True)

    def _undo_redo(self, video_id: int, expected_version: int | None, redo: bool) -> dict:
        """Undo the newest active step, or redo the oldest undone one."""
        svc = self.svc
        with svc.locked(video_id, expected_version):
            sql = ("SELECT MIN(group_id) FROM actions WHERE video_id = ? AND undone = 1" if redo
                   else "SELECT MAX(group_id) FROM actions WHERE video_id = ? AND undone = 0")
            group = svc.db.query_one(sql, (video_id,))[0]
            if group is None:
                raise conflict(f"nothing to {'redo' if redo else 'undo'}")
            rows = svc.db.query("SELECT * FROM actions WHERE video_id = ? AND group_id = ?",
                                (video_id, group))
            step = [Action.from_row(r) for r in rows]
            step_ids = {a.id for a in step}
            keys = {(a.frame, a.obj) for a in step}
            active = [a for a in store.active_actions(svc.db, video_id)
                      if a.id not in step_ids]
            after = sorted(active + step, key=lambda a: a.id) if redo else active
            changes = self._remembered(video_id, self._recompute(video_id, keys, after), after)
            version = self._flip(video_id, group, redo, changes)
        svc.changed(video_id, version, "prompt")
        frame = step[0].frame
        return svc.frame_result(video_id, frame, version, step[-1].id, None,
                                step[0].obj if len({a.obj for a in step}) == 1 else None)

    def _check_point_limits(self, video_id: int, frame: int, obj: int, new: int) -> None:
        """Refuse (422) a prompt past `max_points_per_prompt` or one that would leave the
        object more than `max_points_per_frame` clicks on the frame: every model call on
        the frame takes them all, so they bound how long the call holds the model."""
        config = self.svc.config
        if new > config.max_points_per_prompt:
            raise AppError(422, f"a prompt holds at most {config.max_points_per_prompt} points "
                                f"(got {new}; --max-points-per-prompt)")
        here = store.effective_prompts(
            store.active_actions(self.svc.db, video_id, obj=obj, frame=frame))
        kept = sum(len(a.points or ()) for a in here if a.kind != "mask")
        if kept + new > config.max_points_per_frame:
            raise AppError(422, f"object {obj} would have {kept + new} points on frame {frame}; "
                                f"the limit is {config.max_points_per_frame} "
                                "(--max-points-per-frame): clear the frame's prompts first")

    # ------------------------------------------------------------------ model
    def _compute_added(self, video_id: int, media: Media, action: Action
                       ) -> tuple[np.ndarray, float | None]:
        """The mask of `action`'s object once the action is added (the model runs here)."""
        svc = self.svc
        try:
            rt = svc.runtime(video_id)
            if isinstance(rt, ImageRuntime):
                before = store.active_actions(svc.db, video_id, obj=action.obj, frame=action.frame)
                mask, score = rt.predict(action.frame, before + [action])
                return mask, score
            return rt.apply(action), None
        except PromptError as err:
            svc.drop_runtime(video_id)
            raise AppError(400, str(err)) from None
        except AppError:
            raise
        except Exception:
            svc.drop_runtime(video_id)
            raise

    def _recompute(self, video_id: int, keys: set[tuple[int, int]], after: list[Action]
                   ) -> MaskChanges:
        """Prompt masks of (frame, object) pairs once the active actions are `after`."""
        svc = self.svc
        changes: MaskChanges = {}
        try:
            rt = svc.runtime(video_id)
            for frame, obj in sorted(keys):
                mine = [a for a in after if a.obj == obj]
                here = [a for a in mine if a.frame == frame]
                if isinstance(rt, ImageRuntime):
                    changes[(frame, obj)] = rt.predict(frame, here)[0]
                else:
                    changes[(frame, obj)] = rt.refresh(obj, frame, mine)
                    prompts = store.effective_prompts(here)
                    if len(prompts) == 1 and prompts[0].kind == "mask":
                        w, h = self.svc.media(video_id).frame_size(frame)
                        changes[(frame, obj)] = decode_rle(prompts[0].mask_rle, h, w)
        except AppError:
            raise
        except Exception:
            svc.drop_runtime(video_id)
            raise
        return changes

    def _remembered(self, video_id: int, changes: MaskChanges, after: list[Action]
                    ) -> MaskChanges:
        """`changes` with each pair's mask as the user saw it after its newest active action.

        The model state is rebuilt by replaying prompts, which on a tracked frame need not
        give the mask the user had (a correction there was conditioned on the tracking
        memory of the time): undo and redo give back the stored masks instead. A pair
        whose newest action has none stored (made before they were kept) keeps the
        recomputed mask.
        """
        out = dict(changes)
        for frame, obj in changes:
            here = [a for a in after if a.frame == frame and a.obj == obj]
            if not store.effective_prompts(here):
                out[(frame, obj)] = None
                continue
            rle = store.action_mask(self.svc.db, here[-1].id)
            if rle is not None:
                w, h = self.svc.media(video_id).frame_size(frame)
                out[(frame, obj)] = decode_rle(rle, h, w)
        return out

    # --------------------------------------------------------------- storage
    def _store_masks(self, conn, video_id: int, changes: MaskChanges, version: int
                     ) -> dict[tuple[int, int], str]:
        """Write the prompt masks of `changes`; returns the RLE counts of those not None."""
        written = {}
        for (frame, obj), mask in changes.items():
            if mask is None:
                store.delete_prompt_mask(conn, video_id, frame, obj)
            else:
                rle, area = encode_rle(mask)
                store.put_mask(conn, video_id, frame, obj, "prompt", rle, area, version)
                written[(frame, obj)] = rle
            store.touch_object_prompts(conn, video_id, obj, version)
        return written

    def _commit(self, video_id: int, actions: list[Action], changes: MaskChanges, event: str,
                clicks: int, new_objects: list[int] = ()) -> int:
        """Store new actions (one undo step) with their masks; returns the new version."""
        svc = self.svc
        try:
            with svc.db.transaction() as conn:
                for obj in new_objects:
                    svc.insert_object(conn, video_id, obj)
                group = store.next_group(conn, video_id)
                for action in actions:
                    action.group_id = group
                    action.id = store.insert_action(
                        conn, video_id, group, action.frame, action.obj, action.kind,
                        points=action.points, labels=action.labels, box=action.box,
                        mask_rle=action.mask_rle)
                    store.record_event(conn, video_id, event, obj=action.obj,
                                       frame=action.frame, clicks=clicks)
                version = store.bump_version(conn, video_id)
                written = self._store_masks(conn, video_id, changes, version)
                for action in actions:  # what undo and redo give back later
                    rle = written.get((action.frame, action.obj))
                    if rle is not None:
                        store.put_action_mask(conn, action.id, rle)
            return version
        except BaseException:
            svc.drop_runtime(video_id)
            raise

    def _flip(self, video_id: int, group: int, redo: bool, changes: MaskChanges) -> int:
        svc = self.svc
        try:
            with svc.db.transaction() as conn:
                conn.execute("UPDATE actions SET undone = ? WHERE video_id = ? AND group_id = ?",
                             (0 if redo else 1, video_id, group))
                for frame, obj in changes:
                    store.record_event(conn, video_id, "redo" if redo else "undo", obj=obj,
                                       frame=frame)
                version = store.bump_version(conn, video_id)
                self._store_masks(conn, video_id, changes, version)
            return version
        except BaseException:
            svc.drop_runtime(video_id)
            raise
