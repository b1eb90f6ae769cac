"""The ``masklet_nano`` preset: the SAM 2.1 architecture shrunk for CPU training and tests.

Same modules and parameter names as the official models (so every code path, checkpoint
tool and predictor works unchanged), with a 4-stage Hiera of width 32, a 64-wide
decoder / memory attention, 16-wide memories and 256 px input: about 2.5 M parameters
(10 MB in float32). The memory width keeps the official ratio d_model / mem_dim = 4, so
each object pointer still becomes 4 memory tokens.

Not changed (no config field exists for them, and they are cheap at this width): the
mask decoder's transformer MLP (2048) and IoU head (256) hidden sizes.
"""

from __future__ import annotations

from masklet.config import HieraConfig, MemoryConfig, ModelConfig, register_preset

NANO_NAME = "masklet_nano"

NANO_CONFIG = ModelConfig(
    name=NANO_NAME,
    trunk=HieraConfig(
        embed_dim=32,
        num_heads=1,
        stages=(1, 1, 3, 1),
        global_att_blocks=(4,),  # the last block of stage 3, as the official sizes end it
        window_pos_embed_bkg_spatial_size=(7, 7),
        # At 256 px the stage grids are 64, 32, 16 and 8 tokens wide; the last stage's
        # window covers its whole grid.
        window_spec=(8, 4, 8, 8),
    ),
    memory=MemoryConfig(mem_dim=16, attention_layers=2, attention_ffn_dim=256),
    image_size=256,
    d_model=64,
)

register_preset(NANO_CONFIG)
