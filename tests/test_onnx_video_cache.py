"""`OnnxVideoPredictor(feature_cache_bytes=...)`: kept image features give the very same
masks with fewer image-encoder runs, within the byte budget (tiny at 256 px, random
weights, 6 real bedroom frames)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import require_data

from masklet_runtime.stepper import GraphStepper
from masklet_runtime.video import OnnxVideoPredictor

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def frames():
    src = require_data("videos", "bedroom")
    return [np.asarray(Image.open(src / f"{i:05d}.jpg").convert("RGB")) for i in range(6)]


def _clip(export, frames, **options):
    """Two propagations, the second after a correction (a negative click on frame 5,
    where object 1 was tracked): (clip, masks of the first, masks of the second)."""
    clip = OnnxVideoPredictor(export, intra_op_threads=1, **options).open(frames)
    clip.add_points(1, 1, [[480, 270]], [1])
    clip.add_box(3, 2, [100, 100, 400, 350])
    first = [np.asarray(m) for _, _, m in clip.propagate()]
    clip.add_points(5, 1, [[600, 300]], [0])
    return clip, first, [np.asarray(m) for _, _, m in clip.propagate()]


def _same(got: list, expected: list) -> None:
    for mine, ref in zip(got, expected, strict=True):
        assert np.array_equal(mine, ref)


def test_kept_features_give_the_same_masks_with_fewer_encodings(tiny256_onnx, frames,
                                                                 monkeypatch):
    encoded = []
    encode = GraphStepper.encode_image

    def counted(self, image):
        out = encode(self, image)
        encoded.append(sum(a.nbytes for a in (out.image_embed, out.high_res_0,
                                              out.high_res_1, out.pos_enc)))
        return out

    monkeypatch.setattr(GraphStepper, "encode_image", counted)
    export = tiny256_onnx[1]
    _, first, second = _clip(export, frames)
    # Each pass: prompted frames 1 and 3, forwards 1..5, backwards 1..0.
    assert len(encoded) == 2 * (2 + 5 + 2)
    frame_bytes = encoded[0]
    # With room for every frame each is encoded once; with room for three, the first three
    # encoded (1 and 3 when decoding, then 2) are kept and the 3 others encoded again.
    for budget, kept, again in ((1 << 30, 6, 0), (3 * frame_bytes + 1, 3, 3)):
        encoded.clear()
        clip, got_first, got_second = _clip(export, frames, feature_cache_bytes=budget)
        assert clip.retained_features() == kept
        assert len(encoded) == 6 + again
        _same(got_first, first)
        _same(got_second, second)
    with pytest.raises(ValueError, match="feature_cache_bytes must be an int >= 0"):
        OnnxVideoPredictor(export, feature_cache_bytes=-1)
