"""`build_model`'s defaults: the bundled demo model, no silent random weights, and a
checkpoint's preset inferred from the file as on the command line."""

from __future__ import annotations

import pytest
import torch

from masklet import PRESETS, CheckpointError, build_model, get_config
from masklet.build import MissingWeightsError, resolve_weights
from masklet.bundled import bundled_checkpoint
from masklet.checkpoint import expected_shapes, read_state_dict, save_safetensors

NANO = "masklet_nano"


@pytest.fixture(scope="module")
def bundled() -> dict[str, torch.Tensor]:
    return read_state_dict(bundled_checkpoint())


@pytest.fixture(scope="module")
def random_nano() -> dict[str, torch.Tensor]:
    torch.manual_seed(3)
    return build_model(NANO, random_weights=True).state_dict()


def _same(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> bool:
    got = model.state_dict()
    return set(got) == set(state) and all(torch.equal(got[k], state[k]) for k in state)


def test_no_arguments_give_the_bundled_demo_model(bundled):
    model = build_model()
    assert model.config == PRESETS[NANO] and not model.training
    assert _same(model, bundled)


@pytest.mark.parametrize("preset", [NANO, PRESETS[NANO]], ids=["name", "config"])
def test_the_bundled_preset_gets_the_bundled_weights(preset, bundled):
    assert _same(build_model(preset), bundled)


@pytest.mark.parametrize("preset", ["sam2.1_hiera_tiny", "tiny", "sam2_hiera_large",
                                    get_config("masklet_nano").with_image_size(128)],
                         ids=["name", "alias", "large", "config"])
def test_a_preset_without_weights_is_a_clear_error(preset):
    with pytest.raises(MissingWeightsError) as info:
        build_model(preset)
    message = str(info.value)
    assert isinstance(info.value, ValueError) and "\n" not in message
    assert "checkpoint=" in message and "random_weights=True" in message, message


def test_random_weights_when_asked(bundled):
    torch.manual_seed(0)
    model = build_model(NANO, random_weights=True)
    assert model.config.name == NANO and not _same(model, bundled)
    small = build_model(get_config("sam2.1_hiera_tiny").with_image_size(64), random_weights=True,
                        eval_mode=False)
    assert small.config.image_size == 64 and small.training


def test_random_weights_contradictions_are_refused(tmp_path):
    with pytest.raises(ValueError, match="not both"):
        build_model(NANO, checkpoint=bundled_checkpoint(), random_weights=True)
    with pytest.raises(ValueError, match="needs a preset"):
        build_model(random_weights=True)


def test_a_safetensors_checkpoint_alone_picks_its_preset(tmp_path, random_nano):
    path = tmp_path / "mine.safetensors"
    save_safetensors(random_nano, path)
    model = build_model(checkpoint=path)
    assert model.config == PRESETS[NANO] and _same(model, random_nano)
    assert build_model(checkpoint=str(path)).config.name == NANO


def test_an_official_pt_checkpoint_alone_picks_its_preset(tmp_path, random_nano):
    path = tmp_path / "official.pt"
    torch.save({"model": random_nano}, path)  # the layout of the released files
    model = build_model(checkpoint=path)
    assert model.config == PRESETS[NANO] and _same(model, random_nano)
    assert _same(build_model(checkpoint=dict(random_nano)), random_nano)


@pytest.mark.parametrize("name", ["sam2_hiera_tiny", "sam2.1_hiera_tiny", "sam2.1_hiera_large"])
def test_official_layouts_are_told_apart(name):
    """Names and shapes only (meta tensors): SAM 2 and 2.1 differ by three keys."""
    state = {k: torch.empty(s, device="meta") for k, s in expected_shapes(PRESETS[name]).items()}
    config, checked = resolve_weights(None, state)
    assert config == PRESETS[name] and checked is state


def test_a_checkpoint_that_fits_no_preset_names_the_closest(random_nano):
    state = dict(random_nano)
    state.pop("no_obj_ptr")
    with pytest.raises(CheckpointError, match="fits no known preset exactly .closest: "
                                              "masklet_nano"):
        build_model(checkpoint=state)
    with pytest.raises(CheckpointError, match="holds no tensors"):
        build_model(checkpoint={})


def test_a_preset_that_disagrees_with_the_checkpoint_still_fails(random_nano):
    with pytest.raises(CheckpointError, match="does not fit preset 'sam2.1_hiera_tiny'") as info:
        build_model("tiny", checkpoint=random_nano)
    assert "it fits preset 'masklet_nano'" in str(info.value)
