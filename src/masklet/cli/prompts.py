"""Video prompts given on the command line or in a JSON file."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from masklet.cli.common import CliError, parse_floats, parse_point


@dataclass
class VideoPrompt:
    """Clicks and/or a box, or a mask file, for one object on one frame."""

    frame: int
    obj_id: int
    points: list[list[float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    box: list[float] | None = None
    mask: Path | None = None


def parse_inline(text: str) -> VideoPrompt:
    """'FRAME:OBJ:point=X,Y[:L]' or 'FRAME:OBJ:box=X0,Y0,X1,Y1' (several ';'-separated)."""
    try:
        frame_s, obj_s, rest = text.split(":", 2)
        prompt = VideoPrompt(int(frame_s), int(obj_s))
    except ValueError:
        raise CliError(f"prompt {text!r} must look like FRAME:OBJ:point=X,Y or "
                       "FRAME:OBJ:box=X0,Y0,X1,Y1") from None
    for part in rest.split(";"):
        kind, _, value = part.partition("=")
        if kind == "point":
            x, y, label = parse_point(value)
            prompt.points.append([x, y])
            prompt.labels.append(label)
        elif kind == "box":
            prompt.box = parse_floats(value, 4, "box")
        else:
            raise CliError(f"prompt {text!r}: unknown part {kind!r} (use point= or box=)")
    return prompt


def read_prompt_file(path: Path) -> list[VideoPrompt]:
    """A JSON list of {"frame", "obj", "points": [[x, y], ...], "labels", "box", "mask"}."""
    try:
        items = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CliError(f"prompt file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CliError(f"prompt file {path} is not valid JSON: {exc}") from None
    if not isinstance(items, list):
        raise CliError(f"prompt file {path} must hold a JSON list of prompts")
    prompts = []
    for i, item in enumerate(items):
        try:
            points = [[float(x), float(y)] for x, y in item.get("points", [])]
            labels = [int(v) for v in item.get("labels", [1] * len(points))]
            mask = item.get("mask")
            prompts.append(VideoPrompt(
                int(item["frame"]), int(item["obj"]), points, labels,
                None if item.get("box") is None else [float(v) for v in item["box"]],
                None if mask is None else Path(path).parent / mask))
        except (KeyError, TypeError, ValueError) as exc:
            raise CliError(f"prompt {i} in {path} is malformed: {exc!r}") from None
    return prompts
