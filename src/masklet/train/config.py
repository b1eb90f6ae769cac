"""Training configuration: frozen dataclasses whose defaults follow the official SAM 2.1
fine-tuning recipe (``sam2.1_hiera_b+_MOSE_finetune.yaml``) unless stated otherwise.

`TrainConfig.to_dict` / `TrainConfig.from_dict` round-trip through plain JSON types, so a
configuration can be stored in a checkpoint and read back from a ``.json`` file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

SOURCE_KINDS = ("synthetic", "vos", "sav", "sa1b")


@dataclass(frozen=True)
class PromptConfig:
    """How prompts are simulated on a training clip (the official SAM2Train options).

    Attributes:
        prob_point_input: chance that a clip is prompted with clicks/boxes instead of
            ground-truth masks (image samples always use clicks/boxes).
        prob_box_input: chance, given click prompts, that a prompted frame gets a box.
        prob_sample_from_gt: chance that a correction click is drawn from the ground truth
            instead of the prediction's error region.
        num_init_cond_frames: prompted frames (the first frame plus random others); with
            ``rand_init_cond_frames`` a random count from 1 to this.
        num_frames_to_correct: frames receiving correction clicks (the prompted frames
            plus random others); with ``rand_frames_to_correct`` a random count between
            the number of prompted frames and this.
        add_all_frames_to_correct_as_cond: a corrected frame becomes a conditioning frame.
        num_correction_points: correction clicks per corrected frame.
        box_noise, box_noise_bound: box corner jitter, fraction of the box side capped at
            this many pixels.
    """

    prob_point_input: float = 0.5
    prob_box_input: float = 0.5
    prob_sample_from_gt: float = 0.1
    num_init_cond_frames: int = 2
    rand_init_cond_frames: bool = True
    num_frames_to_correct: int = 2
    rand_frames_to_correct: bool = True
    add_all_frames_to_correct_as_cond: bool = True
    num_correction_points: int = 7
    box_noise: float = 0.1
    box_noise_bound: int = 20

    def __post_init__(self) -> None:
        if self.num_init_cond_frames < 1:
            raise ValueError("num_init_cond_frames must be >= 1")
        if self.num_frames_to_correct < self.num_init_cond_frames:
            raise ValueError("num_frames_to_correct must be >= num_init_cond_frames")


@dataclass(frozen=True)
class LossConfig:
    """Weights of MultiStepMultiMasksAndIous (focal : dice : IoU : object score = 20:1:1:1)."""

    mask_weight: float = 20.0
    dice_weight: float = 1.0
    iou_weight: float = 1.0
    class_weight: float = 1.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    supervise_all_iou: bool = True
    iou_use_l1_loss: bool = True


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with layer-wise lr decay on the trunk (see `masklet.train.optim`) and a
    cosine schedule.

    The official recipe has no warmup; the lr falls from its start value to
    ``final_lr_ratio`` of it over the run. ``vision_lr`` applies to ``image_encoder.*``.
    """

    base_lr: float = 5.0e-6
    vision_lr: float = 3.0e-6
    weight_decay: float = 0.1
    layer_decay: float = 0.9
    warmup_steps: int = 0
    final_lr_ratio: float = 0.1
    grad_clip: float | None = 0.1
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8


@dataclass(frozen=True)
class AugmentConfig:
    """Clip augmentation; one draw per clip unless marked per frame.

    Attributes:
        hflip_prob: horizontal flip.
        degrees, shear: random affine rotation and x-shear ranges (+/- degrees).
        scale: (min, max) zoom of the random affine (> 1 zooms in, like a crop).
        translate: largest shift, fraction of the side.
        brightness, contrast, saturation: colour jitter strength for the whole clip.
        frame_brightness, frame_contrast, frame_saturation: extra jitter drawn per frame.
        grayscale_prob: turn the whole clip gray.
    """

    hflip_prob: float = 0.5
    degrees: float = 25.0
    shear: float = 20.0
    scale: tuple[float, float] = (1.0, 1.0)
    translate: float = 0.0
    brightness: float = 0.1
    contrast: float = 0.03
    saturation: float = 0.03
    frame_brightness: float = 0.1
    frame_contrast: float = 0.05
    frame_saturation: float = 0.05
    grayscale_prob: float = 0.05


@dataclass(frozen=True)
class DataSource:
    """One training data set.

    Attributes:
        kind: "synthetic" (generated videos), "vos" (DAVIS / YouTube-VOS folder), "sav"
            (SA-V: ``path`` holds the ``*.json`` files and ``frames_path`` the extracted
            frames ``<video_id>/<video frame:05d>.jpg``) or "sa1b" (images + JSON).
        path: the data folder (unused for synthetic).
        weight: batches drawn from this source per mixing cycle (each batch comes from a
            single source, so image batches and video batches alternate).
        num_videos: number of distinct synthetic videos.
        video_frames: synthetic video length (default: the clip length).
        max_objects: objects per sample (default: `TrainConfig.max_objects`).
        frames_path: SA-V frame folder.
        motion: synthetic object speed (`SyntheticVideoConfig.motion`; 1 = full speed).
    """

    kind: str = "synthetic"
    path: str | None = None
    weight: int = 1
    num_videos: int = 1000
    video_frames: int | None = None
    max_objects: int | None = None
    frames_path: str | None = None
    motion: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in SOURCE_KINDS:
            raise ValueError(f"unknown data source kind {self.kind!r}; use one of {SOURCE_KINDS}")
        if self.kind != "synthetic" and not self.path:
            raise ValueError(f"a {self.kind!r} data source needs a path")
        if self.weight < 1:
            raise ValueError("a data source's weight must be >= 1")


@dataclass(frozen=True)
class TrainConfig:
    """Everything `run_training` needs.

    Attributes:
        model: preset name (official, alias or registered, e.g. "masklet_nano").
        init_checkpoint: weights to fine-tune from (official ``.pt``, bare state dict
            file or safetensors); None trains from random weights.
        image_size: train at another resolution than the preset's.
        drop_path_rate: override the trunk's stochastic depth (official fine-tune: 0.1).
        sources: the data sets, mixed by their weights.
        output_dir: checkpoints and logs.
        max_steps: optimizer steps; the lr schedule spans them.
        batch_size: samples per step over all processes (divisible by the world size).
        num_frames: clip length of video samples.
        max_objects: objects per video sample.
        seed: every random choice derives from it, the step and the sample's slot.
        resume: continue from ``output_dir/checkpoint.pt`` when it exists.
        save_every: steps between checkpoints (one is always written at the end).
        log_every: steps between log lines.
        num_workers: data-loading worker processes per training process.
        device: "cpu", "cuda", ... (default: this process's CUDA device if any).
        backend: torch.distributed backend (default: nccl on CUDA, else gloo).
        amp: bf16 autocast on CUDA (as the official recipe); ignored elsewhere.
        freeze_batch_norm: keep batch norms (EdgeTAM's RepViT trunk) on their running
            statistics while their scale and shift train; False updates the statistics
            from each clip's frames, e.g. to train a RepViT from scratch (see
            `masklet.train.trainer.freeze_batch_norms`).
    """

    model: str = "masklet_nano"
    init_checkpoint: str | None = None
    image_size: int | None = None
    drop_path_rate: float | None = None
    sources: tuple[DataSource, ...] = (DataSource(),)
    output_dir: str = "runs/masklet"
    max_steps: int = 1000
    batch_size: int = 1
    num_frames: int = 8
    max_objects: int = 3
    seed: int = 123
    resume: bool = True
    save_every: int = 1000
    log_every: int = 10
    num_workers: int = 0
    device: str | None = None
    backend: str | None = None
    amp: bool = True
    freeze_batch_norm: bool = True
    prompts: PromptConfig = field(default_factory=PromptConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if not self.sources:
            raise ValueError("TrainConfig needs at least one data source")
        if min(self.max_steps, self.batch_size, self.num_frames, self.max_objects) < 1:
            raise ValueError("max_steps, batch_size, num_frames and max_objects must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible values (tuples become lists)."""
        return _to_plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of `to_dict`; unknown keys raise ``TypeError``."""
        return _build(cls, data)


_NESTED = {"prompts": PromptConfig, "loss": LossConfig, "optim": OptimConfig,
           "augment": AugmentConfig}


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def _build(cls: type, data: dict[str, Any]) -> Any:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise TypeError(f"unknown {cls.__name__} fields: {unknown}")
    values = {}
    for key, value in data.items():
        if cls is TrainConfig and key in _NESTED:
            value = _build(_NESTED[key], value)
        elif cls is TrainConfig and key == "sources":
            value = tuple(_build(DataSource, v) for v in value)
        elif isinstance(value, list):
            value = tuple(value)
        values[key] = value
    return cls(**values)
