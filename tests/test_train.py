"""Training: losses, prompt simulation, data stream, optimizer groups, the training loop
(loss goes down, resume is exact, 2 processes == 1 process, fine-tuning from weights)."""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image

from masklet import build_model, get_config
from masklet.tracking.step import encode_memory
from masklet.train import (
    NANO_CONFIG,
    AugmentConfig,
    DataSource,
    LossConfig,
    OptimConfig,
    PromptConfig,
    TrainConfig,
    Trainer,
)
from masklet.train.augment import augment_clip
from masklet.train.data import Sa1bSource, TrainStream, VOSSource, build_source
from masklet.train.distributed import local_slots
from masklet.train.losses import DecoderPass, pass_losses
from masklet.train.optim import WarmupCosine, build_optimizer
from masklet.train.prompts import mask_boxes, plan_prompts, sample_boxes, sample_clicks

NO_AUGMENT = AugmentConfig(hflip_prob=0, degrees=0, shear=0, brightness=0, contrast=0,
                           saturation=0, frame_brightness=0, frame_contrast=0,
                           frame_saturation=0, grayscale_prob=0)


@pytest.fixture(autouse=True)
def _one_thread():
    """Training tests run single-threaded: much faster on a shared 2-core machine, where
    threads of one op wait on each other; the setting is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _square(size: int, y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _tiny_config(tmp_path, **overrides) -> TrainConfig:
    """A nano model at 64 px on 3-frame synthetic clips: a step takes a fraction of a second."""
    base = TrainConfig(
        model="masklet_nano", image_size=64, num_frames=3, max_objects=2, batch_size=1,
        sources=(DataSource("synthetic", num_videos=2, video_frames=4),),
        output_dir=str(tmp_path / "run"), resume=False, max_steps=4, save_every=0,
        log_every=0, seed=7,
        prompts=PromptConfig(num_correction_points=2),
        optim=OptimConfig(base_lr=1e-3, vision_lr=1e-3, grad_clip=1.0),
    )
    return replace(base, **overrides)


# ---------------------------------------------------------------- losses
def test_perfect_prediction_has_near_zero_mask_losses():
    gt = torch.stack([_square(32, 4, 20, 6, 18), _square(32, 10, 30, 0, 12)])[:, None]
    logits = 30.0 * (gt.float() * 2 - 1)
    step = DecoderPass(logits, torch.ones(2, 1), torch.full((2, 1), 30.0))
    terms = pass_losses(step, gt, LossConfig())
    assert terms.loss_mask < 1e-9 and terms.loss_dice < 1e-6
    assert terms.loss_iou < 1e-6 and terms.loss_class < 1e-9
    wrong = pass_losses(DecoderPass(-logits, torch.ones(2, 1), torch.full((2, 1), -30.0)),
                        gt, LossConfig())
    assert wrong.loss_mask > 1.0 and wrong.loss_dice > 1.9 and wrong.loss_class > 50


def test_only_the_lowest_loss_mask_of_three_gets_gradient():
    gt = torch.stack([_square(32, 4, 20, 6, 18), _square(32, 10, 30, 0, 12)])[:, None]
    sign = gt.float() * 2 - 1  # [2, 1, H, W]
    # Object 0: candidate 1 is the good one; object 1: candidate 2.
    cand0 = torch.cat([-2 * sign[0], 2 * sign[0], torch.zeros_like(sign[0])])
    cand1 = torch.cat([torch.zeros_like(sign[1]), -2 * sign[1], 2 * sign[1]])
    masks = torch.stack([cand0, cand1]).requires_grad_(True)
    ious = torch.full((2, 3), 0.5, requires_grad=True)
    terms = pass_losses(DecoderPass(masks, ious, torch.ones(2, 1)), gt, LossConfig())
    terms.weighted_total(LossConfig()).backward()
    touched = masks.grad.flatten(2).abs().sum(-1) > 0
    assert touched.tolist() == [[False, True, False], [False, False, True]]
    # supervise_all_iou: every candidate's IoU prediction is trained.
    assert (ious.grad != 0).all()


def test_iou_loss_targets_the_actual_iou():
    gt = _square(20, 0, 10, 0, 10)[None, None]  # 100 px
    pred = _square(20, 0, 10, 5, 15)[None, None]  # overlap 50, union 150 -> IoU 1/3
    logits = 10.0 * (pred.float() * 2 - 1)
    for predicted_iou in (0.9, 0.1):
        step = DecoderPass(logits, torch.tensor([[predicted_iou]]), torch.ones(1, 1))
        terms = pass_losses(step, gt, LossConfig())
        assert terms.loss_iou.item() == pytest.approx(abs(predicted_iou - 1 / 3), abs=1e-6)
    mse = pass_losses(step, gt, LossConfig(iou_use_l1_loss=False))
    assert mse.loss_iou.item() == pytest.approx((0.1 - 1 / 3) ** 2, abs=1e-6)
    # An absent object trains only the object score.
    empty = torch.zeros_like(gt)
    absent = pass_losses(DecoderPass(logits, torch.tensor([[0.9]]), torch.ones(1, 1)), empty,
                         LossConfig())
    assert absent.loss_mask == 0 and absent.loss_dice == 0 and absent.loss_iou == 0
    assert absent.loss_class.item() == pytest.approx(
        torch.nn.functional.softplus(torch.tensor(1.0)).item(), abs=1e-6)


# ---------------------------------------------------------------- prompts
def test_corrective_clicks_land_in_the_error_region():
    gt = _square(40, 10, 30, 10, 30)
    pred = _square(40, 10, 30, 16, 36)  # misses x 10..15 (FN), adds x 30..35 (FP)
    fn, fp = gt & ~pred, pred & ~gt
    coords, labels = sample_clicks(gt.expand(400, 1, 40, 40), pred.expand(400, 1, 40, 40),
                                   np.random.default_rng(0))
    x, y = coords[:, 0, 0].long(), coords[:, 0, 1].long()
    positive = labels[:, 0] == 1
    assert fn[y[positive], x[positive]].all() and fp[y[~positive], x[~positive]].all()
    assert 0.35 < positive.float().mean() < 0.65  # FN and FP have the same area
    # Only a false negative -> positive clicks; only a false positive -> negative ones.
    under, over = _square(40, 10, 30, 10, 20), _square(40, 5, 35, 5, 35)
    for wrong, label, region in ((under, 1, gt & ~under), (over, 0, over & ~gt)):
        coords, labels = sample_clicks(gt.expand(50, 1, 40, 40), wrong.expand(50, 1, 40, 40),
                                       np.random.default_rng(1))
        x, y = coords[:, 0, 0].long(), coords[:, 0, 1].long()
        assert (labels == label).all() and region[y, x].all()


def test_first_click_box_and_perfect_prediction():
    gt = _square(40, 10, 30, 12, 25)[None, None]
    coords, labels = sample_clicks(gt, None, np.random.default_rng(0))
    assert labels.item() == 1 and gt[0, 0, int(coords[0, 0, 1]), int(coords[0, 0, 0])]
    coords, labels = sample_clicks(gt, gt.clone(), np.random.default_rng(0))
    assert labels.item() == 0 and not gt[0, 0, int(coords[0, 0, 1]), int(coords[0, 0, 0])]
    assert mask_boxes(gt).tolist() == [[12.0, 10.0, 24.0, 29.0]]
    boxes, labels = sample_boxes(gt.expand(200, 1, 40, 40), np.random.default_rng(0),
                                 noise=0.1, noise_bound=1)
    assert labels[0].tolist() == [2, 3]
    corners = torch.tensor([[12.0, 10.0], [24.0, 29.0]])
    assert ((boxes - corners).abs() <= 1.0 + 1e-6).all() and (boxes - corners).abs().max() > 0.5


def test_prompt_plans_follow_the_recipe():
    cfg = PromptConfig()
    plans = [plan_prompts(8, cfg, np.random.default_rng(s)) for s in range(200)]
    for p in plans:
        assert p.init_cond_frames[0] == 0 and len(set(p.init_cond_frames)) == len(
            p.init_cond_frames) <= 2
        if p.use_points:
            assert set(p.init_cond_frames) <= p.frames_to_correct and len(p.frames_to_correct) <= 2
        else:
            assert not p.frames_to_correct and not p.box_frames
    points = [p.use_points for p in plans]
    assert 0.35 < np.mean(points) < 0.65
    image = plan_prompts(1, cfg, np.random.default_rng(0))
    assert image.use_points and image.frames_to_correct == {0}


# ---------------------------------------------------------------- data
def test_augmentation_is_consistent_between_frames_and_masks():
    rng = np.random.default_rng(0)
    masks = np.zeros((2, 1, 48, 64), dtype=bool)
    masks[:, 0, 10:30, 5:25] = True
    frames = np.where(masks[:, 0, :, :, None], 255, 0).astype(np.uint8).repeat(3, -1)
    cfg = replace(NO_AUGMENT, hflip_prob=1.0, degrees=20, shear=10, scale=(0.9, 1.1))
    sample = augment_clip(frames, masks, 32, cfg, rng)
    assert sample.images.shape == (2, 3, 32, 32) and sample.masks.shape == (2, 1, 32, 32)
    bright = sample.images[:, 0] > 0.5  # white object pixels, normalised
    agree = (bright == sample.masks[:, 0]).float().mean()
    assert agree > 0.97
    # Flipped: the object now sits on the right half.
    assert sample.masks[0, 0, :, 16:].sum() > sample.masks[0, 0, :, :16].sum()
    again = augment_clip(frames, masks, 32, cfg, np.random.default_rng(0))
    assert torch.equal(again.images, sample.images)


def _write_vos(root, num_frames=5):
    for name, offset in (("a", 0), ("b", 7)):
        (root / "JPEGImages" / name).mkdir(parents=True)
        (root / "Annotations" / name).mkdir(parents=True)
        for t in range(num_frames):
            ids = np.zeros((24, 32), dtype=np.uint8)
            ids[4 + t: 12 + t, 3 + offset: 11 + offset] = 1
            ids[14:20, 20:30] = 2
            Image.fromarray(ids * 100).save(root / "Annotations" / name / f"{t:05d}.png")
            rgb = np.stack([ids * 100] * 3, -1).astype(np.uint8)
            Image.fromarray(rgb).save(root / "JPEGImages" / name / f"{t:05d}.jpg")


def _write_sa1b(folder):
    from pycocotools import mask as mask_utils

    folder.mkdir()
    image = np.full((30, 40, 3), 90, dtype=np.uint8)
    Image.fromarray(image).save(folder / "sa_1.jpg")
    anns = []
    for i, (y, x) in enumerate(((2, 3), (15, 20), (5, 25))):
        m = np.zeros((30, 40), dtype=np.uint8)
        m[y:y + 8, x:x + 9] = 1
        rle = mask_utils.encode(np.asfortranarray(m))
        rle["counts"] = rle["counts"].decode()
        anns.append({"id": i, "segmentation": rle, "area": int(m.sum()), "bbox": [x, y, 9, 8]})
    info = {"image_id": 1, "width": 40, "height": 30, "file_name": "sa_1.jpg"}
    (folder / "sa_1.json").write_text(json.dumps({"image": info, "annotations": anns}))


def test_sources_and_mixed_sharded_stream(tmp_path):
    _write_vos(tmp_path / "vos")
    _write_sa1b(tmp_path / "sa1b")
    vos = VOSSource(str(tmp_path / "vos"), num_frames=3, max_objects=3)
    clip = vos.sample(1, np.random.default_rng(0))
    assert clip.frames.shape == (3, 24, 32, 3) and clip.masks.shape == (3, 2, 24, 32)
    image = Sa1bSource(str(tmp_path / "sa1b"), max_objects=2).sample(0, np.random.default_rng(0))
    assert image.frames.shape == (1, 30, 40, 3) and image.masks.shape == (1, 2, 30, 40)
    synthetic = build_source(DataSource("synthetic", num_videos=3), size=32, num_frames=3,
                             max_objects=2, seed=0)
    sources = [(vos, 2), (Sa1bSource(str(tmp_path / "sa1b"), max_objects=2), 1), (synthetic, 1)]
    stream = TrainStream(sources, seed=3, batch_size=2, size=32, augment=AugmentConfig(),
                         slots=range(2))
    assert [stream.source_of(s)[0] for s in range(8)] == [0, 0, 1, 2, 0, 0, 1, 2]
    assert stream.source_of(6) == (1, 1) and stream.source_of(5) == (0, 3)
    assert stream.sample(2, 0).images.shape == (1, 3, 32, 32)
    whole = stream.local_batch(4)
    shards = [TrainStream(sources, seed=3, batch_size=2, size=32, augment=AugmentConfig(),
                          slots=range(r, r + 1)).local_batch(4)[0] for r in range(2)]
    for (slot, sample), (shard_slot, shard) in zip(whole, shards):
        assert slot == shard_slot and torch.equal(sample.images, shard.images)
        assert torch.equal(sample.masks, shard.masks)
    # Every mask of a sample is visible on its first frame.
    assert all(s.masks[0].flatten(1).any(-1).all() for _, s in whole)


# ---------------------------------------------------------------- model pieces
def test_nano_preset_and_float_memories():
    cfg = get_config("masklet_nano")
    assert cfg is NANO_CONFIG and cfg.image_size == 256
    model = build_model(cfg.with_image_size(64), random_weights=True, eval_mode=False)
    assert 1e6 < sum(p.numel() for p in model.parameters()) < 3e6
    feats = model.forward_image(torch.randn(1, 3, 64, 64))
    masks, scores = torch.randn(1, 1, 64, 64), torch.ones(1, 1)
    assert encode_memory(model, feats, masks, scores, False).dtype == torch.bfloat16
    kept = encode_memory(model, feats, masks, scores, False, dtype=None)
    assert kept.dtype == torch.float32 and kept.requires_grad


def test_optimizer_groups_layer_decay_and_schedule():
    model = build_model(NANO_CONFIG.with_image_size(64), random_weights=True, eval_mode=False)
    cfg = OptimConfig(base_lr=1.0, vision_lr=0.5, layer_decay=0.5, weight_decay=0.1)
    opt = build_optimizer(model, cfg)
    lr, wd = {}, {}
    for group in opt.param_groups:
        for name in group["names"]:
            assert name not in lr
            lr[name], wd[name] = group["lr"], group["weight_decay"]
    assert set(lr) == {n for n, _ in model.named_parameters()}
    n = len(model.image_encoder.trunk.blocks)  # 6
    assert lr["image_encoder.trunk.blocks.5.mlp.layers.0.weight"] == 0.5 * 0.5 ** (n - 5)
    assert lr["image_encoder.trunk.blocks.0.attn.qkv.weight"] == 0.5 * 0.5 ** n
    assert lr["image_encoder.trunk.patch_embed.proj.weight"] == 0.5 * 0.5 ** (n + 1)
    assert lr["image_encoder.trunk.pos_embed"] == lr["image_encoder.neck.convs.0.conv.weight"]
    assert lr["image_encoder.trunk.pos_embed"] == 0.5
    assert lr["sam_mask_decoder.iou_token.weight"] == 1.0
    assert wd["sam_mask_decoder.iou_token.weight"] == 0.1
    assert wd["image_encoder.trunk.blocks.0.norm1.weight"] == 0.0
    assert wd["memory_attention.layers.0.linear1.bias"] == 0.0
    assert wd["memory_encoder.fuser.layers.0.norm.weight"] == 0.1  # LayerNorm2d officially
    schedule = WarmupCosine(total_steps=100, warmup_steps=0, final_ratio=0.1)
    assert schedule(0) == 1.0 and schedule(50) == pytest.approx(0.55)
    assert schedule(100) == pytest.approx(0.1)
    warm = WarmupCosine(total_steps=100, warmup_steps=10, final_ratio=0.1)
    assert warm(0) == pytest.approx(0.1) and warm(9) == 1.0


def test_train_config_round_trips_through_json(tmp_path):
    cfg = _tiny_config(tmp_path, sources=(DataSource("vos", path="/d", weight=3),
                                          DataSource("synthetic")))
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    with pytest.raises(TypeError):
        TrainConfig.from_dict({"modle": "x"})


def test_command_line_overrides_reach_the_config():
    from masklet.train.__main__ import _parser, build_config
    args = _parser().parse_args([
        "--model", "masklet_nano", "--source", "synthetic@3", "--source", "vos:/d@1",
        "--num-videos", "40", "--lr", "1e-3", "--mask-weight", "1", "--dice-weight", "2",
        "--correction-points", "3", "--synthetic-motion", "0.25", "--no-resume"])
    cfg = build_config(args)
    assert cfg.model == "masklet_nano" and not cfg.resume
    assert [(s.kind, s.path, s.weight, s.num_videos, s.motion) for s in cfg.sources] == [
        ("synthetic", None, 3, 40, 0.25), ("vos", "/d", 1, 40, 1.0)]
    assert cfg.optim.base_lr == 1e-3
    assert (cfg.loss.mask_weight, cfg.loss.dice_weight) == (1.0, 2.0)
    assert cfg.prompts.num_correction_points == 3
    default = build_config(_parser().parse_args([]))
    assert (default.loss.mask_weight, default.loss.dice_weight) == (20.0, 1.0)
    assert default.prompts.num_correction_points == TrainConfig().prompts.num_correction_points


# ---------------------------------------------------------------- training loop
def test_a_few_steps_lower_the_loss(tmp_path):
    cfg = _tiny_config(
        tmp_path, max_steps=12, augment=NO_AUGMENT,
        sources=(DataSource("synthetic", num_videos=1, video_frames=4),),
        prompts=PromptConfig(prob_point_input=1.0, num_init_cond_frames=1,
                             num_frames_to_correct=1, num_correction_points=2),
        optim=OptimConfig(base_lr=1e-3, vision_lr=1e-3, grad_clip=1.0, final_lr_ratio=1.0),
    )
    losses = [h.loss for h in Trainer(cfg).fit().history]
    first, last = np.mean(losses[1:4]), np.mean(losses[-3:])
    assert losses[0] > last and last < 0.75 * first, losses


def test_resume_continues_identically(tmp_path):
    # The uninterrupted run loads its data in a worker process: same samples either way.
    straight = Trainer(_tiny_config(tmp_path / "a", num_workers=1)).fit()
    split = _tiny_config(tmp_path / "b", resume=True)
    first_half = Trainer(split).fit(until=2)
    assert first_half.final_step == 2 and first_half.checkpoint.is_file()
    resumed = Trainer(split)
    assert resumed.step == 2
    second_half = resumed.fit()
    expected = [h.loss for h in straight.history]
    got = [h.loss for h in first_half.history + second_half.history]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    final = Trainer(_tiny_config(tmp_path / "a", num_workers=1, resume=True)).model.state_dict()
    for name, value in resumed.model.state_dict().items():
        torch.testing.assert_close(value, final[name], rtol=1e-6, atol=1e-7)
    # The checkpoint is an official-layout file: build_model reads it directly.
    model = build_model(resumed.model_config, checkpoint=str(resumed.checkpoint_path))
    torch.testing.assert_close(model.state_dict(), resumed.model.state_dict())


def test_resuming_with_a_longer_schedule_and_new_rates_follows_them(tmp_path):
    """"Train longer": a run resumed with a larger max_steps and another learning rate
    continues on the schedule its config now describes, not the stored one."""
    first = _tiny_config(tmp_path, max_steps=4, resume=True,
                         optim=OptimConfig(warmup_steps=1, base_lr=1e-3, vision_lr=1e-3))
    Trainer(first).fit(until=2)
    longer = replace(first, max_steps=40,
                     optim=OptimConfig(warmup_steps=1, base_lr=2e-3, vision_lr=2e-3))
    resumed = Trainer(longer)
    assert resumed.step == 2
    factor = WarmupCosine(total_steps=40, warmup_steps=1, final_ratio=0.1)(2)
    expected = [g["lr"] for g in Trainer(replace(longer, resume=False)).optimizer.param_groups]
    got = [g["lr"] for g in resumed.optimizer.param_groups]
    np.testing.assert_allclose(got, [lr * factor for lr in expected], rtol=1e-9)
    assert max(expected) == pytest.approx(2e-3)
    resumed.fit(until=3)  # the next step uses the new schedule, then moves along it
    factor = WarmupCosine(total_steps=40, warmup_steps=1, final_ratio=0.1)(3)
    got = [g["lr"] for g in resumed.optimizer.param_groups]
    np.testing.assert_allclose(got, [lr * factor for lr in expected], rtol=1e-9)


def test_command_line_until_stops_early_on_the_full_schedule(tmp_path, caplog):
    from masklet.train.__main__ import main
    cfg = _tiny_config(tmp_path, max_steps=6, log_every=0)
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg.to_dict()))
    main(["--config", str(path), "--until", "2"])
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 2
    assert len((tmp_path / "run" / "train_log.jsonl").read_text().splitlines()) == 2
    weights = build_model("masklet_nano", checkpoint=tmp_path / "run" / "model.safetensors")
    torch.testing.assert_close(weights.state_dict(), state["model"])  # written at --until too
    # The stored config continues the run (the start had resume off).
    with caplog.at_level(logging.INFO, logger="masklet.train"):
        main(["--config", str(tmp_path / "run" / "train_config.json"), "--until", "3"])
    assert "at step 2" in caplog.text
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["step"] == 3
    assert len((tmp_path / "run" / "train_log.jsonl").read_text().splitlines()) == 3


def test_fine_tuning_starts_from_an_official_layout_checkpoint(tmp_path):
    torch.manual_seed(99)
    source = build_model(NANO_CONFIG.with_image_size(64), random_weights=True)
    path = tmp_path / "official.pt"
    torch.save({"model": source.state_dict()}, path)  # the layout of the released .pt files
    trainer = Trainer(_tiny_config(tmp_path, init_checkpoint=str(path), max_steps=1))
    for name, value in source.state_dict().items():
        assert torch.equal(trainer.model.state_dict()[name], value), name
    scratch = Trainer(_tiny_config(tmp_path / "scratch", max_steps=1))
    assert not torch.equal(scratch.model.sam_mask_decoder.iou_token.weight,
                           source.sam_mask_decoder.iou_token.weight)
    log = trainer.fit().history
    assert len(log) == 1 and np.isfinite(log[0].loss)
    moved = trainer.model.sam_mask_decoder.iou_token.weight
    assert not torch.equal(moved, source.sam_mask_decoder.iou_token.weight)


def _gradients(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {n: (p.grad if p.grad is not None else torch.zeros_like(p)).clone()
            for n, p in trainer.model.named_parameters()}


def _dist_worker(rank: int, world: int, port: int, cfg_dict: dict, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world), GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(1)
    trainer = Trainer(TrainConfig.from_dict(cfg_dict))
    assert trainer.ctx.world_size == world and list(trainer.stream.slots) == [rank]
    result = trainer.compute_gradients(0, trainer.stream.local_batch(0))
    torch.save({"loss": result["loss"], "grads": _gradients(trainer)}, f"{out}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_match_one_process(tmp_path):
    cfg = _tiny_config(tmp_path, batch_size=2, backend="gloo", device="cpu")
    assert "WORLD_SIZE" not in os.environ
    single = Trainer(cfg)
    assert list(single.stream.slots) == [0, 1]
    expected = single.compute_gradients(0, single.stream.local_batch(0))
    expected_grads = _gradients(single)
    mp.spawn(_dist_worker, args=(2, _free_port(), cfg.to_dict(), str(tmp_path)), nprocs=2,
             join=True)
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert got["loss"] == pytest.approx(expected["loss"], rel=1e-6)
        for name, grad in expected_grads.items():
            torch.testing.assert_close(got["grads"][name], grad, rtol=1e-5, atol=1e-8,
                                       msg=name)
    assert any(g.abs().sum() > 0 for g in expected_grads.values())
    with pytest.raises(ValueError):
        local_slots(3, replace(single.ctx, world_size=2))


def test_nano_recipe_configs_load_and_never_draw_the_benchmark_videos():
    from importlib.resources import files
    recipe = files("masklet") / "weights" / "recipe"
    names = sorted(p.name for p in recipe.iterdir() if p.name.endswith(".json"))
    assert names == ["stage3_images.json", "stage4_videos.json"]
    held_out = range(5_000_000, 5_000_000 + 50)  # benchmarks/nano.py FIRST_EVAL_SEED on
    for name in names:
        cfg = TrainConfig.from_dict(json.loads((recipe / name).read_text()))
        assert cfg.model == "masklet_nano" and cfg.resume
        for spec in cfg.sources:
            if spec.kind != "synthetic":
                continue
            source = build_source(spec, size=256, num_frames=cfg.num_frames,
                                  max_objects=cfg.max_objects, seed=cfg.seed)
            seeds = {source.video_seed(i) for i in range(spec.num_videos)}
            assert not seeds & set(held_out), name


def test_an_image_embedding_that_drowns_the_positions_is_reported(tmp_path, caplog):
    trainer = Trainer(_tiny_config(tmp_path, max_steps=2))
    with caplog.at_level(logging.WARNING, logger="masklet.train"):
        first = trainer.fit(until=1).history[0]
    assert 0.3 < first.embed_to_pe < 2.5, first.embed_to_pe  # a fresh model: about 1
    assert "positional encoding" not in caplog.text
    with torch.no_grad():  # what a too-high learning rate did to the nano's neck
        for i in (0, 1):
            conv = trainer.model.image_encoder.neck.convs[i].conv
            conv.weight.mul_(8)
            conv.bias.mul_(8)
    with caplog.at_level(logging.WARNING, logger="masklet.train"):
        second = trainer.fit().history[0]
    assert second.embed_to_pe > 2.5
    assert "positional encoding" in caplog.text


def test_training_forward_tracks_like_the_video_predictor():
    """A clip prompted by its first-frame masks goes through `forward_clip` (in eval mode,
    no gradient) and through the VideoPredictor: the same masks on every tracked frame,
    so what the model learns in training is what it does when used. Two differences are
    the official ones and stay: the predictor remembers a prompted frame from its
    binarised low-res mask (training: the sigmoid of the full-size one) and stores
    memories in bf16. They move logits by up to 3.2% of their range here; a training
    forward that forgot the recent frames moves them by 92% (checked by breaking it)."""
    from masklet import VideoPredictor
    from masklet.bundled import bundled_checkpoint, bundled_preset
    from masklet.data.synthetic import SyntheticVideoConfig, generate_video
    from masklet.io.preprocess import preprocess_video_frame
    from masklet.train.model_step import forward_clip
    from masklet.train.prompts import PromptPlan

    model = build_model(bundled_preset(), checkpoint=bundled_checkpoint()).eval()
    clip = generate_video(11, SyntheticVideoConfig(num_frames=5, num_objects=2))
    ids = (1, 2)
    gt = torch.from_numpy(np.stack([clip.masks == i for i in ids], axis=1))  # [T, O, S, S]
    images = torch.stack([preprocess_video_frame(f, 256) for f in clip.frames])
    plan = PromptPlan(use_points=False, init_cond_frames=(0,), box_frames=frozenset(),
                      frames_to_correct=frozenset())
    with torch.no_grad():
        passes = forward_clip(model, images, gt, plan, PromptConfig(),
                              np.random.default_rng(0))
    predictor = VideoPredictor(model, fill_hole_area=0, progress=False)
    state = predictor.init_state(list(clip.frames))
    for k, i in enumerate(ids):
        predictor.add_new_mask(state, 0, i, gt[0, k].numpy())
    with torch.inference_mode():
        shown = {t: logits[:, 0] for t, _, logits in predictor.propagate_in_video(state)}
    for t in range(1, 5):
        first = passes[t][0]
        best = first.ious.argmax(dim=1)
        trained = first.multimasks[torch.arange(len(ids)), best]  # [O, S, S] logits
        scale = trained.abs().max().item()
        assert scale > 5  # trained weights: confident logits, not all ~0
        assert (trained - shown[t]).abs().max().item() < 0.1 * scale, t
        assert ((trained > 0) == (shown[t] > 0)).float().mean().item() > 0.995, t
