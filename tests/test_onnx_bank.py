"""The torch-free runtime's memory bank (masklet_runtime.bank) against masklet's: the same
memory tokens, position encodings and pointer count for a frame, and the same outputs
dropped, on synthetic object states (no export needed: settings and constants come from
masklet.onnx.manifest, as an export writes them)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from masklet import build_model, get_config
from masklet.onnx.manifest import model_constants, model_settings
from masklet.tracking import state as torch_state
from masklet.tracking.memory_bank import gather_memory
from masklet.tracking.stream_bank import StreamStepper
from masklet_runtime import bank

CONFIGS = {
    "sam2.1": dict(),
    "sam2.1 stride 2, 2 cond frames": dict(memory_temporal_stride_for_eval=2,
                                           max_cond_frames_in_attn=2),
    "sam2.0 (no pointer encoding)": None,
}


@pytest.fixture(scope="module", params=list(CONFIGS))
def model(request):
    torch.manual_seed(0)
    name = "sam2_hiera_tiny" if CONFIGS[request.param] is None else "sam2.1_hiera_tiny"
    config = get_config(name).with_image_size(128)
    config = dataclasses.replace(config, **(CONFIGS[request.param] or {}))
    return build_model(config, random_weights=True).eval()


def _states(model, cond_frames, tracked_frames, no_memory):
    """The same object as masklet's ObjectState and the runtime's, with random outputs."""
    gen = torch.Generator().manual_seed(1)
    side, mem, c = model.config.feat_size, model.mem_dim, model.hidden_dim
    ours, theirs = bank.ObjectState(1), torch_state.ObjectState(1)
    for t in sorted(cond_frames + tracked_frames):
        memory = torch.randn(1, mem, side, side, generator=gen).to(torch.bfloat16)
        ptr = torch.randn(1, c, generator=gen)
        low = torch.randn(1, 1, 4 * side, 4 * side, generator=gen)
        score = torch.randn(1, 1, generator=gen)
        keep = t not in no_memory
        out = torch_state.FrameOutput(low, ptr, score, memory if keep else None)
        bits = memory.flatten(2)[0].T.contiguous().view(torch.int16).numpy().view(np.uint16)
        mine = bank.FrameOutput(low.numpy(), ptr.numpy(), score.numpy(), 0.0,
                                bits if keep else None)
        is_cond = t in cond_frames
        (theirs.cond_outputs if is_cond else theirs.non_cond_outputs)[t] = out
        (ours.cond_outputs if is_cond else ours.non_cond_outputs)[t] = mine
    return ours, theirs


# Backwards only in videos of known length (a live stream is tracked forwards).
@pytest.mark.parametrize("num_frames, reverse", [(None, False), (12, False), (40, False),
                                                 (12, True), (40, True)],
                         ids=["live", "12", "40", "12-backwards", "40-backwards"])
@pytest.mark.parametrize("frame_idx", [3, 9, 21])
def test_gather_equals_masklet(model, num_frames, frame_idx, reverse):
    cond = [0, 5, 7, 20]
    # Tracked frames before the current one, after it when tracking backwards.
    span = range(frame_idx + 1, num_frames or 40) if reverse else range(frame_idx)
    tracked = [t for t in span if t not in cond]
    ours, theirs = _states(model, cond, tracked, no_memory={1, 4, 23})
    reader = bank.MemoryReader(model_settings(model), model_constants(model))
    got = reader.gather(frame_idx, ours, num_frames, reverse)
    with torch.inference_mode():
        ref = gather_memory(model, frame_idx, theirs.cond_outputs, theirs.non_cond_outputs,
                            num_frames, reverse, 1, torch.device("cpu"))
    assert got.num_obj_ptr_tokens == ref.num_obj_ptr_tokens
    assert got.memory.shape == tuple(ref.memory.shape)
    assert np.array_equal(got.memory, ref.memory.numpy())  # bf16 memories: exact
    assert np.abs(got.memory_pos - ref.memory_pos.numpy()).max() <= 1e-5


def test_forget_before_equals_masklet(model):
    cond = [0, 6]
    ours, theirs = _states(model, cond, [t for t in range(1, 30) if t != 6], no_memory=set())
    reader = bank.MemoryReader(model_settings(model), model_constants(model))
    stepper = StreamStepper(model, None, 0)
    for frame_idx in (8, 17, 25, 30):
        reader.forget([ours], frame_idx, None)
        stepper.forget_before([theirs], frame_idx)
        for mine, ref in ((ours.cond_outputs, theirs.cond_outputs),
                          (ours.non_cond_outputs, theirs.non_cond_outputs)):
            assert sorted(mine) == sorted(ref)
            assert [t for t in mine if mine[t].has_memory] == [t for t in ref if
                                                               ref[t].has_memory]
    assert len(ours.non_cond_outputs) < 29  # something was dropped


def _gathered(reader, obj, frame_idx, num_frames, reverse):
    mem = reader.gather(frame_idx, obj, num_frames, reverse)
    return mem.memory, mem.memory_pos, mem.num_obj_ptr_tokens


@pytest.mark.parametrize("reverse", [False, True], ids=["forwards", "backwards"])
def test_forget_keeps_what_the_rest_of_the_pass_reads(model, reverse):
    """Along a pass (with `keep` on the forward one, as the video predictor keeps what its
    backward pass reads), every frame reads the same memory from a bank that forgets as
    from one that keeps everything, and the forgetting bank stays small."""
    num_frames, first = 60, 30
    cond = [first, 45]
    frames = list(range(first, -1, -1)) if reverse else list(range(first, num_frames))
    reader = bank.MemoryReader(model_settings(model), model_constants(model))
    everything, _ = _states(model, cond, [t for t in range(num_frames) if t not in cond],
                            no_memory=set())
    forgetting = dataclasses.replace(
        everything, cond_outputs=dict(everything.cond_outputs),
        non_cond_outputs={t: dataclasses.replace(o) for t, o in
                          everything.non_cond_outputs.items()})
    _, reach = reader.reach(first, num_frames, reverse=True)
    keep = range(0) if reverse else range(first + 1, first + reach + 1)
    largest = 0
    for frame_idx in frames:
        reader.forget([forgetting], frame_idx, num_frames, reverse=reverse, keep=keep)
        largest = max(largest, len(forgetting.non_cond_outputs))
        got = _gathered(reader, forgetting, frame_idx, num_frames, reverse)
        ref = _gathered(reader, everything, frame_idx, num_frames, reverse)
        assert got[2] == ref[2], frame_idx
        assert np.array_equal(got[0], ref[0]) and np.array_equal(got[1], ref[1]), frame_idx
    # The pass started with 58 tracked outputs; at the end it holds the pointer window
    # (and the kept ones) plus the outputs not yet reached.
    assert len(forgetting.non_cond_outputs) < len(everything.non_cond_outputs)
    if not reverse:
        kept = [t for t in keep if t not in cond]
        assert all(forgetting.non_cond_outputs[t].has_memory for t in kept)
