"""The official EdgeTAM as a test oracle, run as a SUBPROCESS (never imported by pytest).

The official EdgeTAM package is also named `sam2`, like the official SAM 2 oracle that
the test process imports, so it runs here in its own interpreter with its own sys.path:
the reference checkout first, then a stand-in `torchvision` (tests/stubs) that lets timm
import. Usage: ``python tests/edgetam_oracle.py JOB`` where JOB is a `torch.save`d dict:

    image_size: int             model input size (a multiple of 256: the perceiver's
                                16x16 grid of 2D latents windows the 1/16 feature map)
    seed: int                   random weights (the same state dict goes into masklet)
    out: str                    where the results dict is written (torch.save)
    tasks: list of dicts        each with "kind" and its arguments (see `TASKS`)

The results dict has "state_dict" (the random weights) and one entry per task, in order.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

TESTS = Path(__file__).resolve().parent
REFERENCE = Path(
    os.environ.get("MASKLET_EDGETAM_REFERENCE", TESTS.parents[1] / "shared/reference/edgetam")
)


def _set_up_imports() -> None:
    """Put the EdgeTAM checkout and the torchvision stand-in ahead of everything else."""
    sys.path[:0] = [str(REFERENCE), str(TESTS / "stubs")]
    import torchvision.transforms as tv_transforms

    from reference import _Normalize, _Resize, _ToTensor

    # The official image predictor's SAM2Transforms builds these three; the stand-in
    # package only has placeholders, so give it the plain torch versions of tests/reference.
    tv_transforms.ToTensor, tv_transforms.Resize = _ToTensor, _Resize
    tv_transforms.Normalize = _Normalize



def build(image_size: int, seed: int):
    """The official EdgeTAM video predictor (a SAM2Base) with random weights, in eval."""
    import timm
    from sam2.build_sam import build_sam2_video_predictor
    from sam2.modeling.backbones import timm as edgetam_timm

    # No weights can be downloaded: build timm's RepViT randomly, as masklet's side is.
    def create_model(*args, pretrained=False, **kwargs):
        return timm.create_model(*args, pretrained=False, **kwargs)

    edgetam_timm.create_model = create_model
    side = image_size // 16
    overrides = [
        f"++model.image_size={image_size}",
        # The config's query grid is the 64x64 of 1024 px; other sizes need their own.
        f"++model.memory_attention.layer.cross_attention.q_sizes=[{side},{side}]",
        "++model.fill_hole_area=0",
    ]
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_sam2_video_predictor("configs/edgetam.yaml", None, device="cpu",
                                           hydra_overrides_extra=overrides)
    randomize(model, seed)
    model.fill_hole_area = 0  # its hole filling is CUDA-only; masklet's tests switch it off
    _upcast_memory(model)
    return model.eval()


def _upcast_memory(model) -> None:
    """Like the SAM 2 oracle (tests/test_video_parity.py): on CPU in fp32 the reference
    crashes when a frame's memory holds only bf16 spatial memories (no object pointer
    yet); upcasting them, as masklet does, leaves every other case unchanged."""
    original = model.memory_attention.forward

    def forward(*args, memory, **kwargs):
        return original(*args, memory=memory.float(), **kwargs)

    model.memory_attention.forward = forward


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Perturb every parameter, and give batch norms non-trivial running statistics, so
    that identity initialisations cannot hide a bug (e.g. in folding batch norms)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.02)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)


def task_encode(model, images: torch.Tensor) -> dict:
    """forward_image of normalised images [B, 3, S, S]: trunk levels, FPN levels, encodings."""
    trunk = model.image_encoder.trunk(images)
    out = model.forward_image(images)
    return {"trunk": trunk, "backbone_fpn": out["backbone_fpn"],
            "vision_pos_enc": out["vision_pos_enc"]}


def task_module(model, path: str, args: list, kwargs: dict):
    """Call a submodule (dotted path) with tensors: for module-level parity."""
    module = model
    for name in path.split("."):
        module = getattr(module, name)
    return module(*args, **kwargs)


def task_image(model, image: np.ndarray, calls: list[dict]) -> list:
    """SAM2ImagePredictor.predict for each call on one HxWx3 uint8 image."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    predictor = SAM2ImagePredictor(model)
    # The official predictor hard-codes the feature sizes of 1024 px; give it the model's.
    side = model.image_size // 4
    predictor._bb_feat_sizes = [(side, side), (side // 2, side // 2), (side // 4, side // 4)]
    predictor.set_image(image)
    results = []
    for call in calls:
        masks, ious, low = predictor.predict(return_logits=True, **call)
        results.append((masks, ious, low))
    return results


def task_video(model, frames_dir: str, calls: list[tuple[str, dict]],
               settings: dict | None = None) -> list:
    """Replay video-predictor calls; "propagate" collects (frame, ids, masks) per frame.
    ``settings``: predictor attributes set for this replay only."""
    settings = settings or {}
    saved = {name: getattr(model, name) for name in settings}
    for name, value in settings.items():
        setattr(model, name, value)
    try:
        return _replay(model, model.init_state(frames_dir), calls)
    finally:
        for name, value in saved.items():
            setattr(model, name, value)


def _replay(model, state, calls) -> list:
    results = []
    for method, kwargs in calls:
        if method == "propagate":
            results.append([(f, list(ids), m.clone())
                            for f, ids, m in model.propagate_in_video(state, **kwargs)])
        elif method == "reset_state":
            model.reset_state(state)
            results.append(None)
        else:
            results.append(getattr(model, method)(state, **kwargs))
    return results


TASKS = {"encode": task_encode, "module": task_module, "image": task_image,
         "video": task_video}


def main(job_path: str) -> None:
    job = torch.load(job_path, weights_only=False)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    model = build(job["image_size"], job.get("seed", 0))
    results = {"state_dict": {k: v.clone() for k, v in model.state_dict().items()}}
    with torch.inference_mode():
        for i, task in enumerate(job.get("tasks", [])):
            task = dict(task)
            results[i] = TASKS[task.pop("kind")](model, **task)
    tmp = job["out"] + ".tmp"
    torch.save(results, tmp)
    os.replace(tmp, job["out"])


if __name__ == "__main__":
    # Only here, never on import: importing this module from the test process (for
    # REFERENCE) must not put the EdgeTAM `sam2` or the stand-in torchvision on its path.
    _set_up_imports()
    main(sys.argv[1])
