"""Training and fine-tuning the `edgetam` preset: layer-wise lr decay over RepViT's
residual units, gradients through the spatial perceiver's compressed memories, frozen
batch-norm statistics, fine-tuning from an official-layout checkpoint, exact resume.

EdgeTAM's smallest image size is 256 px (its perceiver's 16x16 grid), so a step takes
a few seconds here: the runs are 3-frame clips with one object and at most 3 steps.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from masklet import build_model, get_config
from masklet.modeling.sam2 import SAM2Model
from masklet.train import AugmentConfig, DataSource, OptimConfig, PromptConfig, TrainConfig, Trainer
from masklet.train.optim import param_groups
from masklet.train.trainer import model_config_for

SIZE = 256
NO_AUGMENT = AugmentConfig(hflip_prob=0, degrees=0, shear=0, brightness=0, contrast=0,
                           saturation=0, frame_brightness=0, frame_contrast=0,
                           frame_saturation=0, grayscale_prob=0)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _config(tmp_path, **overrides) -> TrainConfig:
    """EdgeTAM at 256 px on one 3-frame synthetic video, one object, no augmentation."""
    base = TrainConfig(
        model="edgetam", image_size=SIZE, num_frames=3, max_objects=1, batch_size=1,
        sources=(DataSource("synthetic", num_videos=1, video_frames=3),),
        output_dir=str(tmp_path / "run"), resume=False, max_steps=3, save_every=0,
        log_every=0, seed=5, augment=NO_AUGMENT,
        prompts=PromptConfig(num_init_cond_frames=1, num_frames_to_correct=1,
                             num_correction_points=1),
        optim=OptimConfig(base_lr=1e-3, vision_lr=5e-4, layer_decay=0.9, grad_clip=1.0,
                          final_lr_ratio=1.0),
    )
    return replace(base, **overrides)


def _repvit_m1_depths() -> dict[str, int]:
    """Trunk name prefix -> exponent of the layer decay, written out for RepViT-M1
    (stages of 2, 2, 14, 2 blocks; stages 1-3 open with a downsample unit): the stem is
    layer 0 of 23 and gets decay^24, the last block decay^1."""
    units = ["stages_0.blocks.0", "stages_0.blocks.1", "stages_1.downsample",
             "stages_1.blocks.0", "stages_1.blocks.1", "stages_2.downsample",
             *(f"stages_2.blocks.{j}" for j in range(14)), "stages_3.downsample",
             "stages_3.blocks.0", "stages_3.blocks.1"]
    assert len(units) == 23
    depths = {"image_encoder.trunk.body.stem.": 24}
    depths.update({f"image_encoder.trunk.body.{u}.": 23 - k for k, u in enumerate(units)})
    return depths


def _expected_lr(name: str, cfg: OptimConfig) -> float:
    if not name.startswith("image_encoder."):
        return cfg.base_lr
    depths = _repvit_m1_depths()
    prefix = [p for p in depths if name.startswith(p)]
    if name.startswith("image_encoder.trunk."):
        assert len(prefix) == 1, name
    return cfg.vision_lr * (cfg.layer_decay ** depths[prefix[0]] if prefix else 1.0)


def test_edgetam_trains_where_it_used_to_be_refused():
    cfg = model_config_for(TrainConfig(model="edgetam", image_size=512))
    assert cfg.image_size == 512 and cfg.perceiver is not None
    with pytest.raises(ValueError, match="RepViT trunk without stochastic depth"):
        model_config_for(TrainConfig(model="edgetam", drop_path_rate=0.1))


def test_optimizer_groups_decay_over_repvit_units():
    with torch.device("meta"):
        model = SAM2Model(get_config("edgetam"))
    cfg = OptimConfig(base_lr=1.0, vision_lr=0.5, layer_decay=0.9, weight_decay=0.1)
    lr, wd = {}, {}
    for group in param_groups(model, cfg):
        for name in group["names"]:
            assert name not in lr
            lr[name], wd[name] = group["lr"], group["weight_decay"]
    assert set(lr) == {n for n, _ in model.named_parameters()}
    for name, value in lr.items():
        assert value == pytest.approx(_expected_lr(name, cfg), rel=1e-12), name
    stem = "image_encoder.trunk.body.stem.conv1.c.weight"
    assert lr[stem] == pytest.approx(0.5 * 0.9**24)
    assert lr["image_encoder.trunk.body.stages_3.blocks.1.channel_mixer.conv2.c.weight"] \
        == pytest.approx(0.5 * 0.9)
    assert lr["image_encoder.neck.convs.0.conv.weight"] == 0.5
    assert lr["spatial_perceiver.latents"] == lr["memory_attention.layers.0.linear1.weight"] == 1
    # Official weight-decay rule: biases and nn.LayerNorm weights are not decayed.
    assert wd["image_encoder.trunk.body.stem.conv1.bn.bias"] == 0.0
    assert wd["image_encoder.trunk.body.stem.conv1.bn.weight"] == 0.1
    assert wd["spatial_perceiver.layers.0.attn.norm_x.weight"] == 0.0
    assert wd["spatial_perceiver.latents_2d"] == 0.1


def _step_sizes(before: dict, model: torch.nn.Module, groups: list[dict]) -> dict:
    """Per parameter with a gradient: the median |Adam step| / lr of the first AdamW step
    (weight decay taken out). Adam's first step is lr * g / (|g| + eps): about lr for
    every element whose gradient is well above eps (1e-8)."""
    params = dict(model.named_parameters())
    sizes = {}
    for group in groups:
        for name in group["names"]:
            grad = params[name].grad
            if grad is None or not (grad.abs() > 1e-6).any():
                continue
            decayed = before[name] * (1 - group["initial_lr"] * group["weight_decay"])
            step = (params[name].detach() - decayed)[grad.abs() > 1e-6]
            sizes[name] = (step.abs().median() / group["initial_lr"]).item()
    return sizes


def test_fine_tune_from_a_checkpoint_moves_each_group_with_its_lr_and_resumes(tmp_path):
    torch.manual_seed(3)
    source = build_model(get_config("edgetam").with_image_size(SIZE), random_weights=True)
    path = tmp_path / "edgetam.pt"
    torch.save({"model": source.state_dict()}, path)  # the layout of the released edgetam.pt
    before = {k: v.clone() for k, v in source.state_dict().items()}
    cfg = _config(tmp_path, init_checkpoint=str(path), resume=True)

    first = Trainer(cfg)
    for name, value in first.model.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert not any(m.training for m in first.model.modules()
                   if isinstance(m, torch.nn.BatchNorm2d))
    head = first.fit(until=1)
    sizes = _step_sizes(before, first.model, first.optimizer.param_groups)
    # Every trunk layer, the perceiver (memories reach later frames with gradients) and
    # memory attention were trained, each parameter by its own group's lr.
    trained = set(sizes)
    for prefix in [*_repvit_m1_depths(), "spatial_perceiver.latents",
                   "spatial_perceiver.latents_2d", "spatial_perceiver.layers.1.",
                   "memory_attention.layers.1."]:
        assert any(n.startswith(prefix) for n in trained), prefix
    off = {n: s for n, s in sizes.items() if not 0.98 < s < 1.02}
    assert not off, off
    # The step lowered the loss of its own batch (same prompts and dropout: seeded by step).
    again = first.compute_gradients(0, first.stream.local_batch(0))["loss"]
    assert again < 0.9 * head.history[0].loss, (again, head.history[0].loss)
    # Batch norms kept their running statistics.
    state = first.model.state_dict()
    for name in state:
        if name.endswith(("running_mean", "running_var")):
            assert torch.equal(state[name], before[name]), name

    resumed = Trainer(cfg)  # continues from checkpoint.pt, not from the init checkpoint
    assert resumed.step == 1
    tail = resumed.fit()
    straight = Trainer(replace(cfg, output_dir=str(tmp_path / "straight"), resume=False)).fit()
    losses = [h.loss for h in straight.history]
    np.testing.assert_allclose([h.loss for h in head.history + tail.history], losses, rtol=1e-5)
    # The run's checkpoint loads as an edgetam model, strictly.
    model = build_model(get_config("edgetam").with_image_size(SIZE),
                        checkpoint=str(resumed.checkpoint_path))
    torch.testing.assert_close(model.state_dict(), resumed.model.state_dict())
