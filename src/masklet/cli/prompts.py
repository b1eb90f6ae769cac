"""Video prompts given on the command line or in a JSON file."""

from __future__ import annotations

import json
import math
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


MAX_OBJECT_ID = 255  # masks are written as 8-bit palette PNGs: object ids 1..255


def check_ids(prompt: VideoPrompt, where: str) -> VideoPrompt:
    """Frame >= 0 and an object id that fits the palette PNGs, checked before any work."""
    if prompt.frame < 0:
        raise CliError(f"{where}: frame {prompt.frame} must be >= 0")
    if not 1 <= prompt.obj_id <= MAX_OBJECT_ID:
        raise CliError(f"{where}: object id {prompt.obj_id} must be in 1..{MAX_OBJECT_ID}")
    return prompt


def parse_inline(text: str) -> VideoPrompt:
    """'FRAME:OBJ:point=X,Y[:L]' or 'FRAME:OBJ:box=X0,Y0,X1,Y1' (several ';'-separated)."""
    try:
        frame_s, obj_s, rest = text.split(":", 2)
        prompt = VideoPrompt(int(frame_s), int(obj_s))
    except ValueError:
        raise CliError(f"prompt {text!r} must look like FRAME:OBJ:point=X,Y or "
                       "FRAME:OBJ:box=X0,Y0,X1,Y1") from None
    check_ids(prompt, f"prompt {text!r}")
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


class _Malformed(Exception):
    """What is wrong with one prompt of a file (wrapped with the file and index)."""


def read_prompt_file(path: Path) -> list[VideoPrompt]:
    """A JSON list of {"frame", "obj", "points": [[x, y], ...], "labels", "box", "mask"}."""
    path = Path(path)
    if path.is_dir():
        raise CliError(f"prompt file {path} is a folder; give a JSON file")
    try:
        items = json.loads(path.read_text())
    except FileNotFoundError:
        raise CliError(f"prompt file not found: {path}") from None
    except OSError as exc:
        raise CliError(f"cannot read prompt file {path}: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CliError(f"prompt file {path} is not valid JSON: {exc}") from None
    if not isinstance(items, list):
        raise CliError(f"prompt file {path} must hold a JSON list of prompts")
    return prompts_from_items(items, path)


def prompts_from_items(items: list, path: Path, where: str | None = None) -> list[VideoPrompt]:
    """The prompts of a parsed JSON list (the --prompts schema); mask files are relative to
    `path`'s folder; errors name `where` (default: `path`)."""
    prompts = []
    for i, item in enumerate(items):
        try:
            prompts.append(_prompt_from_item(item, Path(path)))
        except _Malformed as exc:
            raise CliError(f"prompt {i} in {where or path}: {exc}") from None
    return prompts


def _prompt_from_item(item: object, path: Path) -> VideoPrompt:
    if not isinstance(item, dict):
        raise _Malformed(f"must be a JSON object with frame and obj, got {_show(item)}")
    unknown = sorted(set(item) - {"frame", "obj", "points", "labels", "box", "mask"})
    if unknown:
        raise _Malformed(f"unknown field(s) {', '.join(unknown)}")
    points = [_numbers(p, 2, "each point") for p in _list(item.get("points", []), "points")]
    labels = _list(item.get("labels", [1] * len(points)), "labels")
    if len(labels) != len(points):
        raise _Malformed(f"{len(labels)} labels for {len(points)} points")
    if any(label not in (0, 1) or isinstance(label, bool) for label in labels):
        raise _Malformed(f"labels {_show(labels)}: a label is 1 (positive) or 0 (negative)")
    box = None if item.get("box") is None else _numbers(item["box"], 4, "box")
    mask = item.get("mask")
    if mask is not None and not isinstance(mask, str):
        raise _Malformed("mask must be a file name (relative to the prompt file)")
    if not (points or box or mask):
        raise _Malformed("give points, a box or a mask")
    prompt = VideoPrompt(_integer(item, "frame"), _integer(item, "obj"), points,
                         [int(v) for v in labels], box,
                         None if mask is None else path.parent / mask)
    try:
        return check_ids(prompt, "")
    except CliError as exc:
        raise _Malformed(exc.format_message().removeprefix(": ")) from None


def _show(value: object, limit: int = 60) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _integer(item: dict, key: str) -> int:
    if key not in item:
        raise _Malformed(f"missing {key!r}")
    value = item[key]
    # bool is an int in Python; 1e400 parses as inf; 2.5 is no frame index.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value) or value != int(value):
        raise _Malformed(f"{key} must be an integer, got {_show(value)}")
    return int(value)


def _list(value: object, what: str) -> list:
    if not isinstance(value, list):
        raise _Malformed(f"{what} must be a list, got {_show(value)}")
    return value


def _numbers(value: object, count: int, what: str) -> list[float]:
    ok = isinstance(value, list) and len(value) == count and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        for v in value)
    if not ok:
        raise _Malformed(f"{what} must be {count} finite numbers, got {_show(value)}")
    return [float(v) for v in value]
