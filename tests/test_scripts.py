"""scripts/nano_surgery.py: the weight edits the nano recipe makes between stages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from masklet import build_model
from masklet.checkpoint import read_state_dict, save_safetensors

SURGERY = Path(__file__).resolve().parents[1] / "scripts" / "nano_surgery.py"


def _run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SURGERY), *map(str, args)], capture_output=True,
                          text=True)


def _random_nano(tmp_path) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    model = build_model("masklet_nano").eval()
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
