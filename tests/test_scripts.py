"""scripts/nano_surgery.py: the weight edits the nano recipe makes between stages; the
scoring of benchmarks/nano.py."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from masklet import build_model
from masklet.checkpoint import read_state_dict, save_safetensors

SURGERY = Path(__file__).resolve().parents[1] / "scripts" / "nano_surgery.py"


def _run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SURGERY), *map(str, args)], capture_output=True,
                          text=True)


def _random_nano(tmp_path) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    model = build_model("masklet_nano", random_weights=True).eval()
    path = tmp_path / "in.safetensors"
    save_safetensors(model.state_dict(), path)
    return model, path


def test_scale_embed_scales_only_the_image_embedding(tmp_path):
    model, src = _random_nano(tmp_path)
    dst = tmp_path / "out.safetensors"
    assert _run(src, dst, "--scale-embed", 0.25).returncode == 0
    scaled = build_model("masklet_nano", checkpoint=dst).eval()
    image = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        before, after = model.forward_image(image), scaled.forward_image(image)
    torch.testing.assert_close(after.image_embed, 0.25 * before.image_embed,
                               rtol=1e-5, atol=1e-6)
    for high, high_scaled in zip(before.high_res_feats, after.high_res_feats, strict=True):
        torch.testing.assert_close(high_scaled, high)  # stride 4 and 8 untouched


def test_locality_bias_touches_only_cross_attention_query_key_biases(tmp_path):
    model, src = _random_nano(tmp_path)
    dst = tmp_path / "out.safetensors"
    assert _run(src, dst, "--locality-bias", 1.5).returncode == 0
    before, after = model.state_dict(), dict(read_state_dict(dst))
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    layers = range(model.config.memory.attention_layers)
    expected = sorted(
        [f"memory_attention.layers.{i}.cross_attn_image.{p}_proj.bias"
         for i in layers for p in "qk"]
        + [f"sam_mask_decoder.transformer.layers.{i}.cross_attn_image_to_token.{p}_proj.bias"
           for i in range(2) for p in "qk"])
    assert changed == expected
    for name in changed:
        torch.testing.assert_close(after[name], before[name] + 1.5)


def test_refuses_a_foreign_checkpoint_and_writes_nothing(tmp_path):
    src = tmp_path / "other.safetensors"
    save_safetensors({"layer.weight": torch.zeros(2, 2)}, src)
    for flag in ("--scale-embed", "--locality-bias"):
        done = _run(src, tmp_path / "o.safetensors", flag, 2)
        assert done.returncode != 0 and "not a SAM 2 checkpoint" in done.stderr
        assert not (tmp_path / "o.safetensors").exists()
    assert "give --scale-embed" in _run(src, tmp_path / "o.safetensors").stderr


def _nano_benchmark():
    path = SURGERY.parents[1] / "benchmarks" / "nano.py"
    spec = importlib.util.spec_from_file_location("nano_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_nano_benchmark_scores_spans_and_out_of_view_frames():
    bench = _nano_benchmark()
    gt = np.zeros((8, 10, 10), dtype=bool)
    gt[:, 2:6, 2:6] = True
    gt[4:6] = False  # out of view on frames 4 and 5
    pred = gt.copy()
    pred[1:3, 2:6, 6:10] = True  # frames 1-2: twice the object (J = 0.5)
    kept = bench.score_object(pred, gt)
    np.testing.assert_allclose(kept.j, [1, 0.5, 0.5, 1, 1, 1, 1, 1])
    assert bench._span_mean([kept], 1, 2) == 0.5
    assert bench._span_mean([kept], 3, 5) == 1.0
    np.testing.assert_array_equal(bench._out_of_view_empty([kept]), [True, True])
    pred[5, 0, 0] = True  # one pixel while the object is away: J 0 on that frame
    leaked = bench.score_object(pred, gt)
    assert leaked.j[5] == 0
    np.testing.assert_array_equal(bench._out_of_view_empty([leaked]), [True, False])
    j, _ = leaked.jf  # frames 1..6 scored, not the first and last
    assert j == np.mean([0.5, 0.5, 1, 1, 0, 1])
