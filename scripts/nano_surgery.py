"""Two weight edits the nano recipe makes between training stages (see
src/masklet/weights/NANO.md):

    python scripts/nano_surgery.py IN OUT --scale-embed 0.25
    python scripts/nano_surgery.py IN OUT --locality-bias 1.5

``--scale-embed F`` multiplies the stride-16 image embedding by F. Training at a high
learning rate had grown it to about 4 times the scale of the prompt encoder's positional
encoding (std 2.7 against 0.7). The mask decoder finds where a click or box lies by
comparing positional encodings inside its attention; an embedding that large drowns the
comparison, and every prompt gave the same all-objects mask. The embedding is the sum of
two FPN lateral convolutions, so scaling their weights and biases scales it exactly; the
stride-4 and stride-8 features are left as they are.

``--locality-bias B`` adds B to every query and key bias of the memory attention's
cross-attention. Under RoPE a constant shared by queries and keys contributes
sum_i B^2 cos(theta_i * offset) to each attention logit, which is largest at offset 0:
each position starts by reading the memories of the same place in earlier frames instead
of a uniform average over all of them. The run that made the shipped weights matched the
attention names by "cross_attn_image", which also takes the mask decoder's image-to-token
attention; this edit does the same so the recipe rebuilds those weights. That attention
has no RoPE, so there the constant only shifts each token's logits, which training
absorbs.
"""

from __future__ import annotations

import argparse
import re

from masklet.checkpoint import read_state_dict, save_safetensors

# Neck convolutions summed into the stride-16 image embedding (top-down FPN levels).
EMBED_CONVS = ("image_encoder.neck.convs.0.conv", "image_encoder.neck.convs.1.conv")
CROSS_ATTN_QK_BIAS = re.compile(
    r"(memory_attention|sam_mask_decoder\.transformer)\.layers\.\d+"
    r"\.cross_attn_image(_to_token)?\.[qk]_proj\.bias")


def scale_embed(state: dict, factor: float) -> list[str]:
    names = [f"{conv}.{part}" for conv in EMBED_CONVS for part in ("weight", "bias")]
    missing = [n for n in names if n not in state]
    if missing:
        raise SystemExit(f"the checkpoint lacks {missing}: not a SAM 2 checkpoint")
    for name in names:
        state[name] = state[name] * factor
    return names


def add_locality_bias(state: dict, bias: float) -> list[str]:
    names = [n for n in state if CROSS_ATTN_QK_BIAS.fullmatch(n)]
    if not names:
        raise SystemExit("the checkpoint has no cross_attn_image q/k biases: not a SAM 2 "
                         "checkpoint")
    for name in names:
        state[name] = state[name] + bias
    return names


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", help="weights to read (.pt or .safetensors)")
    p.add_argument("output", help="safetensors file to write")
    p.add_argument("--scale-embed", type=float, help="multiplier of the image embedding")
    p.add_argument("--locality-bias", type=float,
                   help="added to the memory cross-attention's query and key biases")
    args = p.parse_args()
    if args.scale_embed is None and args.locality_bias is None:
        p.error("give --scale-embed and/or --locality-bias")
    state = dict(read_state_dict(args.checkpoint))
    changed = []
    if args.scale_embed is not None:
        changed += scale_embed(state, args.scale_embed)
    if args.locality_bias is not None:
        changed += add_locality_bias(state, args.locality_bias)
    save_safetensors(state, args.output)
    print(f"wrote {args.output}; changed {len(changed)} tensors: {', '.join(changed)}")


if __name__ == "__main__":
    main()
