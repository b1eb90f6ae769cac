"""The `edgetam` preset inside masklet: checkpoint recognition, the re-parameterised RepViT,
streaming, bf16, automatic masks and the CLI (parity with the official code is in
tests/test_edgetam_parity.py)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import make_objects_present, require_data
from reference import rel_err

from masklet import StreamingTracker, VideoPredictor, build_model, get_config
from masklet.checkpoint import CheckpointError, check_fits, closest_preset
from masklet.modeling.sam2 import SAM2Model

SIZE = 256  # the smallest size EdgeTAM allows (a multiple of 16 * its 16x16 latent grid)


def _meta_state(name: str) -> dict:
    with torch.device("meta"):
        return SAM2Model(get_config(name)).state_dict()


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build_model(get_config("edgetam").with_image_size(SIZE), random_weights=True)
    make_objects_present(m)
    return m


@pytest.fixture(scope="module")
def bedroom8(tmp_path_factory):
    src = require_data("videos", "bedroom")
    out = tmp_path_factory.mktemp("bedroom8")
    for i in range(8):
        os.symlink(src / f"{i:05d}.jpg", out / f"{i:05d}.jpg")
    return out


def test_checkpoint_preset_is_inferred():
    assert closest_preset(_meta_state("edgetam")) == ("edgetam", True)
    assert closest_preset(_meta_state("sam2_hiera_tiny")) == ("sam2_hiera_tiny", True)


def test_wrong_file_names_missing_and_unexpected_keys():
    with pytest.raises(CheckpointError) as err:
        check_fits(_meta_state("sam2_hiera_tiny"), get_config("edgetam"), source="tiny.pt")
    text = str(err.value)
    assert "does not fit preset 'edgetam'" in text
    assert "missing keys" in text and "image_encoder.trunk.body." in text
    assert "unexpected keys" in text and "image_encoder.trunk.blocks." in text
    assert "it fits preset 'sam2_hiera_tiny'" in text
    with pytest.raises(CheckpointError, match="it fits preset 'edgetam'"):
        check_fits(_meta_state("edgetam"), get_config("sam2.1_hiera_tiny"))


def test_image_size_must_fit_the_perceiver_grid():
    with pytest.raises(ValueError, match="multiple of 256"):
        get_config("edgetam").with_image_size(320)
    assert get_config("edgetam").with_image_size(512).feat_size == 32


def test_folded_repvit_equals_plain():
    """Inference folds batch norms and merges the mixer branches; the result equals the
    plain layers, the state dict keeps the checkpoint's names, and a weight change is seen."""
    from masklet.modeling.repvit import RepViT

    trunk = get_config("edgetam").trunk
    net = RepViT(embed_dim=trunk.embed_dim, depth=trunk.depth)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in net.modules():  # non-trivial statistics, or folding would be a no-op
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
                m.weight.copy_(1 + 0.1 * torch.randn(m.weight.shape, generator=gen))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
    net.eval()
    keys = list(net.state_dict())
    x = torch.randn(1, 3, SIZE, SIZE, generator=gen)
    plain = [t.detach() for t in net(x)]  # autograd on: the plain layers
    with torch.inference_mode():
        folded = net(x)
    for level, (a, b) in enumerate(zip(folded, plain)):
        assert rel_err(a, b) < 1e-4, f"level {level}"
    assert list(net.state_dict()) == keys
    # A changed weight (e.g. loading a checkpoint) refreshes the folded cache.
    with torch.no_grad():
        net.body.stem.conv1.bn.running_var.mul_(4.0)
        after = net(x)
    plain_after = [t.detach() for t in net(x)]
    assert rel_err(after[0], plain[0]) > 1e-3
    for a, b in zip(after, plain_after):
        assert rel_err(a, b) < 1e-4


def _offline(model, frames, click, mask):
    predictor = VideoPredictor(model, fill_hole_area=0, progress=False)
    state = predictor.init_state(str(frames))
    predictor.add_new_points_or_box(state, 0, 1, *click)
    out = {f: dict(zip(ids, m)) for f, ids, m in
           predictor.propagate_in_video(state, max_frame_num_to_track=3)}
    f, ids, m = predictor.add_new_mask(state, 3, 2, mask)
    out[f] = dict(zip(ids, m))
    for f, ids, m in predictor.propagate_in_video(state, start_frame_idx=3):
        out.setdefault(f, {}).update(zip(ids, m))
    return out


def test_streaming_equals_offline_two_objects(model, bedroom8):
    """Two objects (one added later by a mask): the streaming bank holds perceiver latents."""
    click = ([[480, 270]], [1])
    mask = np.zeros((540, 960), dtype=bool)
    mask[200:420, 300:700] = True
    with torch.inference_mode():
        expected = _offline(model, bedroom8, click, mask)
    session = StreamingTracker(model, fill_hole_area=0).start(str(bedroom8))
    session.add_points(1, *click)
    got = {}
    for frame in session:
        got[frame.frame_idx] = dict(zip(frame.obj_ids, frame.masks))
        if frame.frame_idx == 3:
            update = session.add_mask(2, mask)
            got[3] = dict(zip(update.obj_ids, update.masks))
    assert sorted(got) == list(range(8)) and list(got[7]) == [1, 2]
    compared = 0
    for f, objects in expected.items():
        for obj_id, ref in objects.items():
            assert rel_err(got[f][obj_id], ref) < 1e-5, f"frame {f} object {obj_id}"
            compared += 1
    assert compared == 8 + 5
    assert any(float(m.max()) > 0 for m in got[7].values()), "nothing tracked to compare"


def test_memory_is_compressed(model, bedroom8):
    """A stored EdgeTAM memory is 512 latent tokens, not the 16x16 (or 64x64) map."""
    predictor = VideoPredictor(model, fill_hole_area=0, progress=False)
    with torch.inference_mode():
        state = predictor.init_state(str(bedroom8))
        predictor.add_new_points_or_box(state, 0, 1, [[480, 270]], [1])
        list(predictor.propagate_in_video(state, max_frame_num_to_track=2))
    obj = state.get_object(1)
    memory = obj.non_cond_outputs[1].maskmem_features
    assert tuple(memory.shape) == (1, 512, 64) and memory.dtype == torch.bfloat16


def test_bf16_tracks_close_to_fp32(model, bedroom8):
    """bf16 autocast runs the whole EdgeTAM path (RepViT, perceiver, split-grid RoPE)."""
    results = {}
    for precision in ("fp32", "bf16"):
        predictor = VideoPredictor(model, fill_hole_area=0, progress=False,
                                   precision=precision)
        with torch.inference_mode():
            state = predictor.init_state(str(bedroom8))
            predictor.add_new_points_or_box(state, 0, 1, [[480, 270]], [1])
            results[precision] = [m for _, _, m in
                                  predictor.propagate_in_video(state, max_frame_num_to_track=3)]
    for a, b in zip(results["bf16"], results["fp32"]):
        assert a.dtype == torch.float32
        shown_a, shown_b = a > 0, b > 0
        union = (shown_a | shown_b).sum()
        assert union == 0 or (shown_a & shown_b).sum() / union > 0.9


def test_automatic_masks_run(model):
    from masklet.amg.generator import AutomaticMaskGenerator

    image = np.asarray(
        np.random.default_rng(0).integers(0, 255, (SIZE, SIZE, 3)), dtype=np.uint8
    )
    generator = AutomaticMaskGenerator(model, points_per_side=4, pred_iou_thresh=0.0,
                                       stability_score_thresh=0.0)
    masks = generator.generate(image)
    assert masks and all(m["segmentation"].shape == (SIZE, SIZE) for m in masks)


def test_automatic_masks_in_video(model, tmp_path):
    """`masklet auto-video`'s loop with EdgeTAM: objects found on frame 0 are tracked
    through the perceiver's memories; discovery runs again on frame 2."""
    from masklet.amg.generator import AutomaticMaskGenerator
    from masklet.amg.video import DiscoveryConfig, track_everything

    src = require_data("videos", "bedroom")
    for i in range(4):
        os.symlink(src / f"{i:05d}.jpg", tmp_path / f"{i:05d}.jpg")
    generator = AutomaticMaskGenerator(model, points_per_side=4, pred_iou_thresh=0.0,
                                       stability_score_thresh=0.0)
    predictor = VideoPredictor(model, fill_hole_area=0, progress=False)
    with torch.inference_mode():
        state = predictor.init_state(str(tmp_path))
        frames = list(track_everything(predictor, generator, state,
                                       DiscoveryConfig(every=2, max_objects=3)))
    assert [f for f, _, _ in frames] == [0, 1, 2, 3]
    for _, obj_ids, logits in frames:
        assert obj_ids[:1] == [1] and logits.shape == (len(obj_ids), 1, 540, 960)
        assert (logits[0] > 0).any()


def test_cli_model_edgetam(tmp_path):
    from masklet.checkpoint import save_safetensors
    from masklet.cli import main

    torch.manual_seed(0)
    path = tmp_path / "edgetam.safetensors"
    save_safetensors(build_model("edgetam", random_weights=True).state_dict(), path)
    runner = CliRunner()
    result = runner.invoke(main, ["info", str(path)])
    assert result.exit_code == 0, result.output
    assert "fits preset: edgetam" in result.output
    photo = require_data("images", "truck.jpg")
    out = tmp_path / "out"
    result = runner.invoke(main, ["image", str(photo), "--model", "edgetam", "--checkpoint",
                                  str(path), "--point", "500,375", "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert any(out.iterdir())


def test_bounded_memory_50_frames(model):
    """The streaming bank keeps its fixed number of (compressed) memories with EdgeTAM."""
    from test_streaming import _check_bounded

    _check_bounded(model, 50)


@pytest.mark.slow
def test_bounded_memory_2000_frames():
    """The same over 2,000 frames, on a reduced EdgeTAM: what bounds the bank (the perceiver's
    compressed memories, the pointer window) is kept; the trunk, the perceiver and the memory
    attention are made shallow and narrow (3 min on 2 cores instead of 7.5 for the preset)."""
    import dataclasses

    from test_streaming import _check_bounded

    base = get_config("edgetam").with_image_size(SIZE)
    config = dataclasses.replace(
        base,
        trunk=dataclasses.replace(base.trunk, embed_dim=(16, 32, 64, 128), depth=(1, 1, 1, 1)),
        memory=dataclasses.replace(base.memory, attention_layers=1, attention_ffn_dim=256),
        perceiver=dataclasses.replace(base.perceiver, depth=1, num_latents=64,
                                      num_latents_2d=64))
    torch.manual_seed(0)
    reduced = build_model(config, random_weights=True)
    make_objects_present(reduced)
    assert reduced.spatial_perceiver is not None  # memories are still compressed
    _check_bounded(reduced, 2000)
