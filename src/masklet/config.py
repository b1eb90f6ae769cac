"""Model configurations as frozen dataclasses, and the named presets.

The eight official configurations (SAM 2 and SAM 2.1, each in tiny, small,
base_plus and large) differ only in the Hiera trunk and in a few
object-pointer / occlusion flags; each preset below states only what differs.
Field names follow the official code so a reader can map them one to one.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class HieraConfig:
    """Hiera trunk hyperparameters (``image_encoder.trunk``)."""

    embed_dim: int = 96  # channels of stage 1; doubled at each later stage
    num_heads: int = 1  # heads of stage 1; doubled at each later stage
    stages: tuple[int, ...] = (1, 2, 7, 2)  # blocks per stage
    global_att_blocks: tuple[int, ...] = (5, 7, 9)  # blocks using global attention
    window_pos_embed_bkg_spatial_size: tuple[int, int] = (7, 7)  # background pos-embed grid
    window_spec: tuple[int, ...] = (8, 4, 14, 7)  # window size per stage
    q_pool: int = 3  # number of stage transitions that pool queries
    drop_path_rate: float = 0.0  # stochastic depth, used only when training

    @property
    def channel_list(self) -> tuple[int, ...]:
        """Output channels of the stages, lowest resolution first (as the FPN expects)."""
        return tuple(self.embed_dim * 2**i for i in reversed(range(len(self.stages))))


@dataclass(frozen=True)
class RepViTConfig:
    """RepViT trunk hyperparameters (EdgeTAM's ``image_encoder.trunk``: timm's
    ``repvit_m1.dist_in1k`` as a four-level feature extractor, legacy block layout)."""

    embed_dim: tuple[int, ...] = (48, 96, 192, 384)  # channels per stage
    depth: tuple[int, ...] = (2, 2, 14, 2)  # blocks per stage (after its downsample)
    mlp_ratio: int = 2
    kernel_size: int = 3

    @property
    def channel_list(self) -> tuple[int, ...]:
        """Output channels of the stages, lowest resolution first (as the FPN expects)."""
        return tuple(reversed(self.embed_dim))


@dataclass(frozen=True)
class PerceiverConfig:
    """EdgeTAM's 2D spatial perceiver: compresses each memory frame to latent tokens.

    ``num_latents`` global latents attend to the whole memory map; ``num_latents_2d``
    latents (a square grid) each attend to one window of it. A stored memory is then
    ``num_latents + num_latents_2d`` tokens instead of H * W.
    """

    depth: int = 2
    num_latents: int = 256
    num_latents_2d: int = 256
    dim_head: int = 64
    heads: int = 1
    ff_mult: int = 4
    use_self_attn: bool = True

    @property
    def grid_side(self) -> int:
        """Side of the square grid of 2D latents (16 for 256)."""
        return math.isqrt(self.num_latents_2d)

    @property
    def tokens_per_frame(self) -> int:
        return self.num_latents + self.num_latents_2d


@dataclass(frozen=True)
class MemoryConfig:
    """Memory encoder and memory attention hyperparameters (shared by all official sizes)."""

    mem_dim: int = 64  # channels of a stored memory (memory_encoder.out_dim)
    num_maskmem: int = 7  # 1 prompted frame + 6 recent frames attended to
    attention_layers: int = 4  # memory_attention.num_layers
    attention_ffn_dim: int = 2048
    attention_dropout: float = 0.1
    rope_theta: float = 10000.0
    fuser_layers: int = 2  # CXBlocks in the memory encoder's fuser


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to build a SAM 2 model; the official yaml flags, typed."""

    name: str
    trunk: HieraConfig | RepViTConfig = field(default_factory=HieraConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    # EdgeTAM: memories pass through a spatial perceiver before they are stored.
    perceiver: PerceiverConfig | None = None
    image_size: int = 1024  # square input resolution
    d_model: int = 256  # width of the neck, prompt encoder and decoder (hidden_dim)
    backbone_stride: int = 16
    # Scaled sigmoid applied to mask logits before the memory encoder.
    sigmoid_scale_for_mem_enc: float = 20.0
    sigmoid_bias_for_mem_enc: float = -10.0
    use_mask_input_as_output_without_sam: bool = True
    directly_add_no_mem_embed: bool = True
    use_high_res_features_in_sam: bool = True
    multimask_output_in_sam: bool = True
    multimask_min_pt_num: int = 0
    multimask_max_pt_num: int = 1
    multimask_output_for_tracking: bool = True
    use_multimask_token_for_obj_ptr: bool = True
    iou_prediction_use_sigmoid: bool = True
    use_obj_ptrs_in_encoder: bool = True
    max_obj_ptrs_in_encoder: int = 16
    only_obj_ptrs_in_the_past_for_eval: bool = True
    pred_obj_scores: bool = True
    pred_obj_scores_mlp: bool = True
    fixed_no_obj_ptr: bool = True
    soft_no_obj_ptr: bool = False
    use_mlp_for_obj_ptr_proj: bool = True
    # The SAM 2.1 additions (off in SAM 2.0).
    no_obj_embed_spatial: bool = True
    add_tpos_enc_to_obj_ptrs: bool = True
    proj_tpos_enc_in_obj_ptrs: bool = True
    use_signed_tpos_enc_to_obj_ptrs: bool = True
    # Inference behaviour the official builders switch on (build_sam2 "postprocessing").
    dynamic_multimask_via_stability: bool = True
    dynamic_multimask_stability_delta: float = 0.05
    dynamic_multimask_stability_thresh: float = 0.98
    binarize_mask_from_pts_for_mem_enc: bool = True
    # Memory-bank selection at inference time.
    max_cond_frames_in_attn: int = -1  # -1: attend to every prompted frame
    memory_temporal_stride_for_eval: int = 1
    non_overlap_masks_for_mem_enc: bool = False

    @property
    def feat_size(self) -> int:
        """Side of the lowest-resolution feature map (64 at 1024 px)."""
        return self.image_size // self.backbone_stride

    def with_image_size(self, image_size: int) -> ModelConfig:
        """The same model at another input resolution (must be a multiple of 32*window;
        with a perceiver, of 16 * its 2D grid side: 256 for EdgeTAM)."""
        if self.perceiver is not None:
            side = self.perceiver.grid_side
            if (image_size // self.backbone_stride) % side or image_size % self.backbone_stride:
                raise ValueError(
                    f"{self.name} needs an image size that is a multiple of "
                    f"{self.backbone_stride * side} (its perceiver windows the feature map "
                    f"into {side}x{side}), got {image_size}"
                )
        return replace(self, image_size=image_size)


_SAM2_0_FLAGS = dict(
    no_obj_embed_spatial=False,
    add_tpos_enc_to_obj_ptrs=False,
    proj_tpos_enc_in_obj_ptrs=False,
    use_signed_tpos_enc_to_obj_ptrs=False,
)

_TRUNKS = {
    "tiny": HieraConfig(),
    "small": HieraConfig(stages=(1, 2, 11, 2), global_att_blocks=(7, 10, 13)),
    "base_plus": HieraConfig(
        embed_dim=112,
        num_heads=2,
        stages=(2, 3, 16, 3),
        global_att_blocks=(12, 16, 20),
        window_pos_embed_bkg_spatial_size=(14, 14),
    ),
    "large": HieraConfig(
        embed_dim=144,
        num_heads=2,
        stages=(2, 6, 36, 4),
        global_att_blocks=(23, 33, 43),
        window_pos_embed_bkg_spatial_size=(7, 7),
        window_spec=(8, 4, 16, 8),
    ),
}


def _official_presets() -> dict[str, ModelConfig]:
    presets = {}
    for size, trunk in _TRUNKS.items():
        presets[f"sam2.1_hiera_{size}"] = ModelConfig(name=f"sam2.1_hiera_{size}", trunk=trunk)
        presets[f"sam2_hiera_{size}"] = ModelConfig(
            name=f"sam2_hiera_{size}", trunk=trunk, **_SAM2_0_FLAGS
        )
    return presets


PRESETS: dict[str, ModelConfig] = _official_presets()

# A small demo model, not an official size: the SAM 2.1 architecture shrunk for CPU
# training (about 2.5 M parameters, 256 px input). masklet trains it itself and ships
# it as the default when no checkpoint is given (see masklet.bundled).
NANO_PRESET = "masklet_nano"
PRESETS[NANO_PRESET] = ModelConfig(
    name=NANO_PRESET,
    trunk=HieraConfig(
        embed_dim=32,
        num_heads=1,
        stages=(1, 1, 3, 1),
        global_att_blocks=(4,),  # the last block of stage 3, as the official sizes end it
        window_pos_embed_bkg_spatial_size=(7, 7),
        # At 256 px the stage grids are 64, 32, 16 and 8 tokens wide.
        window_spec=(8, 4, 8, 8),
    ),
    memory=MemoryConfig(mem_dim=16, attention_layers=2, attention_ffn_dim=256),
    image_size=256,
    d_model=64,  # mem_dim keeps the official ratio 4: a pointer still makes 4 tokens
)

# EdgeTAM (CVPR 2025): SAM 2.0 flags with a RepViT-M1 trunk, a spatial perceiver over
# memories and 2 memory-attention layers (official config sam2/configs/edgetam.yaml).
EDGETAM_PRESET = "edgetam"
PRESETS[EDGETAM_PRESET] = ModelConfig(
    name=EDGETAM_PRESET,
    trunk=RepViTConfig(),
    memory=MemoryConfig(attention_layers=2),
    perceiver=PerceiverConfig(),
    **_SAM2_0_FLAGS,
)

# Short names people type: "tiny" is the newest generation.
ALIASES: dict[str, str] = {
    **{size: f"sam2.1_hiera_{size}" for size in _TRUNKS},
    **{f"sam2.1_{size}": f"sam2.1_hiera_{size}" for size in _TRUNKS},
    **{f"sam2_{size}": f"sam2_hiera_{size}" for size in _TRUNKS},
    "sam2.1_hiera_b+": "sam2.1_hiera_base_plus",
    "sam2_hiera_b+": "sam2_hiera_base_plus",
    "sam2.1_hiera_t": "sam2.1_hiera_tiny",
    "sam2.1_hiera_s": "sam2.1_hiera_small",
    "sam2.1_hiera_l": "sam2.1_hiera_large",
    "sam2_hiera_t": "sam2_hiera_tiny",
    "sam2_hiera_s": "sam2_hiera_small",
    "sam2_hiera_l": "sam2_hiera_large",
}


def register_preset(config: ModelConfig) -> None:
    """Add a preset (e.g. a custom or bundled model) under ``config.name``."""
    PRESETS[config.name] = config


def get_config(name: str) -> ModelConfig:
    """Return the preset called ``name`` (official name or alias).

    Raises:
        KeyError: with the list of known presets when the name is unknown.
    """
    key = ALIASES.get(name, name)
    if key not in PRESETS:
        known = ", ".join(sorted(PRESETS))
        raise KeyError(f"unknown preset {name!r}; known presets: {known}")
    return PRESETS[key]


def config_diff(config: ModelConfig, base: ModelConfig | None = None) -> dict[str, object]:
    """Fields of ``config`` that differ from ``base`` (default: SAM 2.1 tiny), for display."""
    base = base or PRESETS["sam2.1_hiera_tiny"]
    return {
        f.name: getattr(config, f.name)
        for f in dataclasses.fields(config)
        if getattr(config, f.name) != getattr(base, f.name)
    }
