"""Run SAMURAI's official video predictor (the oracle) on a job file; save what it did.

    python tests/samurai_oracle.py JOB.pt RESULT.pt

SAMURAI's fork is a package named `sam2`, like the official SAM 2 the other parity tests
import, so it only ever runs in this separate process (started by
tests/test_motion_parity.py), with the fork first on sys.path. The job holds the weights,
the preprocessed frames (the oracle skips its own frame loading, so both sides see the
same pixels), the prompts and the propagation calls. The result holds every yielded
frame's mask logits and, per tracked frame, the candidate the oracle chose, its predicted
IoU, motion score and the filter's stable-frame count afterwards.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

SAMURAI_ROOT = Path(__file__).resolve().parents[2] / "shared" / "reference" / "samurai" / "sam2"
# Job keys -> the fork's constructor arguments.
PARAMS = {"stable_frames": "stable_frames_threshold", "stable_iou": "stable_ious_threshold",
          "motion_weight": "kf_score_weight", "memory_iou": "memory_bank_iou_threshold",
          "memory_object_score": "memory_bank_obj_score_threshold",
          "memory_motion": "memory_bank_kf_score_threshold",
          "present_logit": "min_obj_score_logits"}


def _build(job):
    import torch
    from sam2.build_sam import build_sam2_video_predictor

    overrides = ["++model.fill_hole_area=0", f"++model.image_size={job['image_size']}"]
    overrides += [f"++model.{PARAMS[k]}={v}" for k, v in job["motion"].items()]
    predictor = build_sam2_video_predictor("configs/samurai/sam2.1_hiera_t.yaml", None,
                                           device="cpu", hydra_overrides_extra=overrides)
    predictor.load_state_dict(job["state_dict"], strict=True)
    predictor.eval()
    torch.set_grad_enabled(False)
    return predictor


def _instrument(predictor, records: dict):
    """Record, per tracked frame, the candidate chosen among several and the filter."""
    import torch

    current = {"frame": None}
    track_step, heads = predictor.track_step, predictor._forward_sam_heads

    def track_step_spy(frame_idx, *args, **kwargs):
        current["frame"] = frame_idx
        return track_step(frame_idx, *args, **kwargs)

    def heads_spy(*args, **kwargs):
        out = heads(*args, **kwargs)
        low_multi, _, ious, low, _, _, obj_logits, best_iou, kf_score = out
        if ious.shape[1] > 1:
            matches = [k for k in range(ious.shape[1])
                       if torch.equal(low_multi[0, k], low[0, 0]) and
                       float(ious[0, k]) == float(best_iou.flatten()[0])]
            records[current["frame"]] = {
                "candidate": matches[0] if len(matches) == 1 else -1,
                "argmax_iou": int(torch.argmax(ious[0])),
                "iou": float(best_iou.flatten()[0]),
                "motion_score": None if kf_score is None else float(kf_score.flatten()[0]),
                "stable_frames": int(predictor.stable_frames),
                "object_score": float(obj_logits.flatten()[0]),
            }
        return out

    predictor.track_step = track_step_spy
    predictor._forward_sam_heads = heads_spy


def main(job_path: str, result_path: str) -> None:
    sys.path.insert(0, str(SAMURAI_ROOT))
    warnings.simplefilter("ignore")
    import sam2.sam2_video_predictor as vp
    import torch

    job = torch.load(job_path, weights_only=False)
    frames = job["frames"]
    height, width = job["video_hw"]
    vp.load_video_frames = lambda **_: (frames, height, width)
    predictor = _build(job)
    records: dict = {}
    _instrument(predictor, records)
    state = predictor.init_state("unused")
    calls = []
    for kind, kwargs in job["calls"]:
        if kind == "prompt":
            _, ids, masks = predictor.add_new_points_or_box(state, **kwargs)
            calls.append({"prompt": (list(ids), masks.clone())})
        else:
            calls.append({"frames": [(f, list(ids), m.clone()) for f, ids, m in
                                     predictor.propagate_in_video(state, **kwargs)]})
    torch.save({"calls": calls, "records": records}, result_path)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
