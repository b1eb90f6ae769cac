"""Reading, checking and writing weights: official .pt layouts, safetensors, clear errors.

Key-mismatch checks use meta-device state dicts (names and shapes, no memory); the
round trips use the tiny preset at a 128 px input so a forward costs little.
"""

from __future__ import annotations

import os
import re

import pytest
import torch

from masklet import PRESETS, CheckpointError, build_model, get_config
from masklet.checkpoint import closest_preset, expected_shapes, read_state_dict, save_safetensors

SIZE = 128
TINY = "sam2.1_hiera_tiny"
OFFICIAL = [f"sam2{gen}_hiera_{size}" for gen in ("", ".1")
            for size in ("tiny", "small", "base_plus", "large")]
SAM2_1_ONLY = ["no_obj_embed_spatial", "obj_ptr_tpos_proj.bias", "obj_ptr_tpos_proj.weight"]


def _meta_state(name: str) -> dict[str, torch.Tensor]:
    """A state dict with the preset's names and shapes, on the meta device."""
    return {k: torch.empty(s, device="meta") for k, s in expected_shapes(PRESETS[name]).items()}


def _outputs(model) -> list[torch.Tensor]:
    image = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    coords = torch.tensor([[[40.0, 70.0], [90.0, 20.0]]])
    labels = torch.tensor([[1, 0]], dtype=torch.int32)
    with torch.inference_mode():
        feats = model.add_no_mem_embed(model.forward_image(image))
        out = model.forward_sam_heads(feats.image_embed, feats.high_res_feats,
                                      points=(coords, labels), multimask_output=True)
    return [out.low_res_multimasks, out.ious, out.obj_ptr, out.object_score_logits]


class _Source:
    """A tiny model with seeded random weights and its outputs, built once per module."""

    def __init__(self):
        torch.manual_seed(0)
        self.config = get_config(TINY).with_image_size(SIZE)
        self.model = build_model(self.config, random_weights=True)
        self.state = self.model.state_dict()
        self.outputs = _outputs(self.model)

    def assert_same(self, model) -> None:
        loaded = model.state_dict()
        assert loaded.keys() == self.state.keys()
        for k, v in self.state.items():
            assert torch.equal(loaded[k], v), k
        for a, b in zip(_outputs(model), self.outputs):
            assert torch.equal(a, b)


@pytest.fixture(scope="module")
def source() -> _Source:
    return _Source()


def _count(message: str, kind: str) -> int:
    found = re.search(rf"{kind} keys (\d+):", message)
    assert found, f"no '{kind} keys N:' in:\n{message}"
    return int(found.group(1))


# ----------------------------------------------------------------- keys that do not fit
def test_tiny_weights_into_small_preset_explains_the_mismatch():
    tiny, small = expected_shapes(PRESETS[TINY]), expected_shapes(PRESETS["sam2.1_hiera_small"])
    missing, unexpected = sorted(set(small) - set(tiny)), sorted(set(tiny) - set(small))
    assert missing and unexpected  # the sizes differ in both directions
    with pytest.raises(CheckpointError) as info:
        build_model("sam2.1_hiera_small", checkpoint=_meta_state(TINY))
    msg = str(info.value)
    assert "'sam2.1_hiera_small'" in msg
    assert _count(msg, "missing") == len(missing) and missing[0] in msg
    assert _count(msg, "unexpected") == len(unexpected) and unexpected[0] in msg
    assert "shape mismatches" in msg  # blocks 10-11 are wider in tiny's last stage
    assert f"it fits preset '{TINY}'" in msg


def test_sam2_0_checkpoint_into_sam2_1_preset_names_the_new_keys():
    with pytest.raises(CheckpointError) as info:
        build_model(TINY, checkpoint=_meta_state("sam2_hiera_tiny"))
    msg = str(info.value)
    assert _count(msg, "missing") == len(SAM2_1_ONLY)
    assert all(k in msg for k in SAM2_1_ONLY)
    assert "unexpected" not in msg and "shape mismatches" not in msg
    assert "it fits preset 'sam2_hiera_tiny'" in msg


def test_sam2_1_checkpoint_into_sam2_0_preset_names_the_extra_keys():
    with pytest.raises(CheckpointError) as info:
        build_model("sam2_hiera_large", checkpoint=_meta_state("sam2.1_hiera_large"))
    msg = str(info.value)
    assert _count(msg, "unexpected") == len(SAM2_1_ONLY)
    assert all(k in msg for k in SAM2_1_ONLY)
    assert "it fits preset 'sam2.1_hiera_large'" in msg


def test_one_wrong_shape_is_named_with_both_shapes():
    state = _meta_state(TINY)
    state["sam_mask_decoder.iou_token.weight"] = torch.empty(1, 128, device="meta")
    with pytest.raises(CheckpointError) as info:
        build_model(TINY, checkpoint=state)
    msg = str(info.value)
    assert "shape mismatches 1: sam_mask_decoder.iou_token.weight (1, 128) vs model (1, 256)" in msg
    assert "missing" not in msg and "unexpected" not in msg
    assert f"the closest preset (not an exact fit) is '{TINY}'" in msg


def test_long_key_lists_are_shortened_with_a_count():
    state = _meta_state(TINY)
    dropped = sorted(k for k in state if k.startswith("memory_attention."))
    assert len(dropped) > 5
    for k in dropped:
        del state[k]
    with pytest.raises(CheckpointError) as info:
        build_model(TINY, checkpoint=state)
    msg = str(info.value)
    assert f"missing keys {len(dropped)}: " in msg
    assert f"({len(dropped) - 5} more)" in msg and dropped[5] not in msg


@pytest.mark.parametrize("name", OFFICIAL)
def test_each_official_preset_is_recognised_from_its_keys(name):
    assert closest_preset(_meta_state(name)) == (name, True)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(KeyError) as info:
        build_model("sam3_hiera_tiny")
    msg = str(info.value)
    assert "sam3_hiera_tiny" in msg
    assert all(name in msg for name in PRESETS)


def test_aliases():
    assert get_config("tiny").name == TINY
    assert get_config("sam2.1_hiera_b+").name == "sam2.1_hiera_base_plus"
    assert get_config("sam2_hiera_l").name == "sam2_hiera_large"


# ----------------------------------------------------------------- files that load
def test_official_layout_pt_file_loads(source, tmp_path):
    path = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": source.state}, path)
    source.assert_same(build_model(source.config, checkpoint=path))


def test_bare_state_dict_pt_file_loads(source, tmp_path):
    path = tmp_path / "bare.pt"
    torch.save(source.state, path)
    loaded = read_state_dict(path)
    assert loaded.keys() == source.state.keys()
    assert all(torch.equal(loaded[k], v) for k, v in source.state.items())


def test_in_memory_state_dict_loads(source):
    source.assert_same(build_model(source.config, checkpoint=dict(source.state)))


def test_safetensors_round_trip(source, tmp_path):
    path = tmp_path / "tiny.safetensors"
    save_safetensors(source.state, path)
    assert sorted(os.listdir(tmp_path)) == ["tiny.safetensors"]  # no temp file left behind
    source.assert_same(build_model(source.config, checkpoint=str(path)))


def test_safetensors_keeps_dtypes_and_handles_views(tmp_path):
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    state = {"a": base.t(), "b": base[1], "half": torch.ones(2, dtype=torch.float16),
             "bf16": torch.full((2, 2), 0.5, dtype=torch.bfloat16)}
    path = tmp_path / "views.safetensors"
    save_safetensors(state, path)
    loaded = read_state_dict(path)
    for k, v in state.items():
        assert loaded[k].dtype == v.dtype and torch.equal(loaded[k], v), k


def test_safetensors_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    import safetensors.torch

    path = tmp_path / "w.safetensors"
    save_safetensors({"x": torch.ones(3)}, path)
    before = path.read_bytes()

    def broken_save(tensors, filename, *args, **kwargs):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_safetensors({"x": torch.zeros(3)}, path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["w.safetensors"]


# ----------------------------------------------------------------- files that do not
def _assert_names_path(exc_info, path) -> None:
    assert str(path) in str(exc_info.value)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError) as info:
        build_model(TINY, checkpoint=path)
    _assert_names_path(info, path)
    assert "not found" in str(info.value)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_corrupt_file(tmp_path, suffix):
    path = tmp_path / f"corrupt{suffix}"
    path.write_bytes(b"\x00this is not a checkpoint" * 10)
    with pytest.raises(CheckpointError) as info:
        read_state_dict(path)
    _assert_names_path(info, path)


def test_truncated_pt_file(source, tmp_path):
    full = tmp_path / "full.pt"
    torch.save({"model": source.state}, full)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(CheckpointError) as info:
        read_state_dict(cut)
    _assert_names_path(info, cut)


@pytest.mark.parametrize("payload", [[1, 2, 3], {"model": {"a": 1}}, {"w": torch.ones(1), "n": 3}],
                         ids=["list", "model_of_ints", "mixed_values"])
def test_pickle_that_is_not_a_state_dict(tmp_path, payload):
    path = tmp_path / "other.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="does not hold a state dict") as info:
        read_state_dict(path)
    _assert_names_path(info, path)


def test_sam2_0_file_into_sam2_1_preset_names_the_file(tmp_path):
    torch.manual_seed(0)
    state = build_model(get_config("sam2_hiera_tiny").with_image_size(SIZE),
                        random_weights=True).state_dict()
    path = tmp_path / "sam2_hiera_tiny.pt"
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointError) as info:
        build_model(TINY, checkpoint=path)
    msg = str(info.value)
    assert str(path) in msg and f"'{TINY}'" in msg and "'sam2_hiera_tiny'" in msg
    # The right preset takes the same file.
    build_model(get_config("sam2_hiera_tiny").with_image_size(SIZE), checkpoint=path)
