"""The manifest and constants of an export: what the runtime needs besides the graphs.

``manifest.json``: {"format": "masklet-onnx", "format_version", "masklet_version",
"preset", "opset", "graphs": {name: {"file", "sha256", "inputs", "outputs"}} (each input /
output as {"name", "dtype", "shape"}, str dims dynamic), "constants": {"file", "sha256"},
"settings"}. `settings` are the `ModelConfig` rules the tracker applies between graph calls
(memory selection, pointer encodings, multimask choice); ``constants.npz`` holds the learned
tensors it adds outside the graphs (no-memory embeddings, temporal and memory position
encodings, the pointer temporal projection). A runtime checks ``format_version``, not the
masklet version.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from masklet.io.preprocess import IMAGENET_MEAN, IMAGENET_STD
from masklet.modeling.sam2 import SAM2Model
from masklet.onnx.memory_attention import memory_tokens_per_frame
from masklet.tracking.memory_bank import memory_token_positions

MANIFEST_FORMAT = "masklet-onnx"
# 2: memory_attention takes the frame once (curr at batch 1) for all objects.
FORMAT_VERSION = 2

# ModelConfig fields the runtime reads, copied under their own names.
_CONFIG_FIELDS = (
    "image_size", "max_obj_ptrs_in_encoder", "max_cond_frames_in_attn",
    "memory_temporal_stride_for_eval", "use_obj_ptrs_in_encoder", "add_tpos_enc_to_obj_ptrs",
    "proj_tpos_enc_in_obj_ptrs", "use_signed_tpos_enc_to_obj_ptrs",
    "only_obj_ptrs_in_the_past_for_eval", "directly_add_no_mem_embed",
    "use_mask_input_as_output_without_sam", "multimask_output_in_sam",
    "multimask_output_for_tracking", "multimask_min_pt_num", "multimask_max_pt_num",
    "pred_obj_scores", "non_overlap_masks_for_mem_enc", "binarize_mask_from_pts_for_mem_enc",
)


def model_settings(model: SAM2Model) -> dict:
    """The preset's settings the runtime needs, JSON-ready."""
    c = model.config
    settings = {name: getattr(c, name) for name in _CONFIG_FIELDS}
    settings.update(
        feat_size=c.feat_size,
        hidden_dim=model.hidden_dim,
        mem_dim=model.mem_dim,
        num_maskmem=model.num_maskmem,
        memory_tokens_per_frame=memory_tokens_per_frame(model),
        low_res_size=4 * c.feat_size,
        image_mean=[float(v) for v in IMAGENET_MEAN],
        image_std=[float(v) for v in IMAGENET_STD],
    )
    return settings


def model_constants(model: SAM2Model) -> dict[str, np.ndarray]:
    """float32 arrays the runtime adds outside the graphs (shapes in the contract)."""
    cpu = torch.device("cpu")

    def array(t: torch.Tensor) -> np.ndarray:
        return t.detach().to(cpu, torch.float32).numpy().copy()

    with torch.no_grad():
        consts = {
            "no_mem_embed": array(model.no_mem_embed.reshape(-1)),
            "no_mem_pos_enc": array(model.no_mem_pos_enc.reshape(-1)),
            "maskmem_tpos_enc": array(model.maskmem_tpos_enc.reshape(model.num_maskmem, -1)),
            "maskmem_pos_enc": array(memory_token_positions(model, model.device)[:, 0]),
        }
        if model.config.proj_tpos_enc_in_obj_ptrs:
            consts["obj_ptr_tpos_proj_weight"] = array(model.obj_ptr_tpos_proj.weight)
            consts["obj_ptr_tpos_proj_bias"] = array(model.obj_ptr_tpos_proj.bias)
    return consts


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
