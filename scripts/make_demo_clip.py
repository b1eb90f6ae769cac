"""Make the demo clip shipped in the package: the first 30 bedroom frames at 480x270.

The frames come from the SAM 2 release assets (Apache-2.0); their licence is copied beside
the clip. Run from the repository root, with ../shared/data present:

    python scripts/make_demo_clip.py            # writes src/masklet/assets/bedroom.mp4
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import av
import numpy as np
from PIL import Image

from masklet.export.atomic import atomic_path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def encode(frames: list[Path], out: Path, size: tuple[int, int], fps: int, crf: int) -> None:
    """Resize ``frames`` to ``size`` (w, h) and write them as an H.264 MP4 (yuv420p)."""
    with atomic_path(out) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height = size
            stream.pix_fmt = "yuv420p"
            # crf: quality; the clip is tiny either way, and blockiness would change masks.
            stream.options = {"crf": str(crf), "preset": "veryslow"}
            for path in frames:
                with Image.open(path) as im:
                    rgb = np.asarray(im.convert("RGB").resize(size, Image.Resampling.LANCZOS))
                for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=Path, default=DATA / "videos" / "bedroom")
    parser.add_argument("--out", type=Path, default=ROOT / "src" / "masklet" / "assets"
                        / "bedroom.mp4")
    parser.add_argument("--count", type=int, default=30)
    parser.add_argument("--width", type=int, default=480)
    parser.add_argument("--height", type=int, default=270)
    parser.add_argument("--fps", type=int, default=24)
    parser.add_argument("--crf", type=int, default=20)
    args = parser.parse_args()
    frames = sorted(args.frames.glob("*.jpg"))[: args.count]
    if len(frames) < args.count:
        raise SystemExit(f"need {args.count} JPEG frames in {args.frames}, found {len(frames)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    encode(frames, args.out, (args.width, args.height), args.fps, args.crf)
    licence = DATA / "LICENSE-sam2-assets"
    shutil.copyfile(licence, args.out.parent / licence.name)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e3:.0f} kB, {len(frames)} frames "
          f"{args.width}x{args.height} at {args.fps} fps) and {licence.name}")


if __name__ == "__main__":
    main()
