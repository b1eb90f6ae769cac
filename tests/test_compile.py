"""``torch.compile`` for inference (`masklet.modeling.compile`): same masks as eager."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from reference import rel_err

from masklet import VideoPredictor, build_model, get_config
from masklet.cli import main
from masklet.modeling.compile import COMPILED_MODULES, compile_for_inference, is_compiled


def _nano():
    torch.manual_seed(0)
    return build_model(get_config("masklet_nano").with_image_size(128), random_weights=True)


def _track(model, frames) -> list[torch.Tensor]:
    predictor = VideoPredictor(model, progress=False)
    state = predictor.init_state(frames)
    predictor.add_new_points_or_box(state, 0, 1, points=[[40, 30]], labels=[1])
    predictor.add_new_points_or_box(state, 0, 2, box=[60, 40, 110, 90])
    return [logits.clone() for _, _, logits in predictor.propagate_in_video(state)]


@pytest.mark.slow  # compiling takes about 3 minutes on 2 CPU cores (cold cache)
def test_compiled_model_tracks_like_eager():
    """Two objects over 5 frames (the memory bank grows, so memory attention sees new
    shapes): the compiled model gives the eager model's mask logits."""
    eager = _nano()
    compiled = build_model(eager.config, checkpoint=eager.state_dict(), compile=True)
    assert is_compiled(compiled) and not is_compiled(eager)
    assert not any(p.requires_grad for p in compiled.parameters())
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (96, 128, 3), dtype=np.uint8) for _ in range(5)]
    want, got = _track(eager, frames), _track(compiled, frames)
    assert len(got) == len(want) == 5
    assert max(rel_err(g, w) for g, w in zip(got, want)) < 1e-4


def test_compile_is_for_inference_only():
    with pytest.raises(ValueError, match="eval_mode"):
        build_model(get_config("masklet_nano"), compile=True, eval_mode=False)
    model = _nano().train()
    with pytest.raises(ValueError, match="eval mode"):
        compile_for_inference(model)
    assert not any(getattr(model, name)._compiled_call_impl for name in COMPILED_MODULES)


def test_cli_video_has_compile_flag():
    result = CliRunner().invoke(main, ["video", "--help"])
    assert result.exit_code == 0 and "--compile" in result.output
