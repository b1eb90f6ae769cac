"""The batch manifest: JSON Lines, one video per line.

    {"video": "clips/a.mp4", "prompts": [{"frame": 0, "obj": 1, "points": [[210, 350]]}]}
    {"video": "clips/b.mp4", "prompts": "prompts/b.json", "name": "b-run2"}
    {"video": "frames/c", "auto": {"every": 15, "max_objects": 10}}

Two kinds of problem are told apart. A line whose *shape* is wrong (not JSON, unknown keys,
no video, both or neither of prompts/auto, a clashing output name) makes the whole manifest
malformed: nothing runs (exit status 2), since a typo would otherwise silently drop videos.
A line whose *content* is wrong (bad prompts, an unreadable prompt file, auto options out of
range) fails that line alone: the job carries the message and is reported as failed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import click

from masklet.cli.common import CliError
from masklet.cli.prompts import VideoPrompt, prompts_from_items, read_prompt_file

KEYS = {"video", "prompts", "auto", "name"}
# Names inside OUT_DIR that a video folder may not take.
RESERVED = {"results.jsonl", ".masklet-batch.lock"}
# `masklet auto-video` options that are not per-video auto settings.
_NOT_AUTO = {"video", "out_dir", "overwrite", "preset", "checkpoint", "random_weights",
             "device", "dtype", "quiet"}


class ManifestError(Exception):
    """The manifest as a whole is unusable (one line saying where and why)."""


@dataclass(frozen=True)
class Job:
    """One manifest line, resolved: what a worker needs to track one video.

    `prompts` is set for prompted tracking, `auto` (every `masklet auto-video` option by
    parameter name, defaults filled in) for automatic masks. `error` is a problem found
    while reading the line: the job fails with it and is never sent to a worker.
    """

    line: int
    name: str
    video: Path
    prompts: tuple[VideoPrompt, ...] | None = None
    auto: dict | None = None
    error: str | None = None
    spec: dict = field(default_factory=dict, compare=False)  # the line as given (for keys)


def read_manifest(path: Path) -> list[Job]:
    """Every job of the manifest at `path`, in order; relative paths are relative to its
    folder. Raises `ManifestError` when any line's shape is wrong."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(f"manifest not found: {path}") from None
    except IsADirectoryError:
        raise ManifestError(f"manifest {path} is a folder; give a JSONL file") from None
    except OSError as exc:
        raise ManifestError(f"cannot read manifest {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ManifestError(f"manifest {path} is not UTF-8 text") from None
    jobs: list[Job] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        job = _job(path, number, raw)
        if job.name in seen:
            raise ManifestError(f"{path}:{number}: output name {job.name!r} is also line "
                                f"{seen[job.name]}'s (give one of them a \"name\")")
        seen[job.name] = number
        jobs.append(job)
    if not jobs:
        raise ManifestError(f"manifest {path} lists no videos")
    return jobs


def _job(path: Path, number: int, raw: str) -> Job:
    where = f"{path}:{number}"
    try:
        item = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{where}: not valid JSON ({exc.msg})") from None
    if not isinstance(item, dict):
        raise ManifestError(f"{where}: each line must be a JSON object with \"video\"")
    unknown = sorted(set(item) - KEYS)
    if unknown:
        raise ManifestError(f"{where}: unknown key(s) {', '.join(unknown)} "
                            f"(use {', '.join(sorted(KEYS))})")
    video = item.get("video")
    if not isinstance(video, str) or not video:
        raise ManifestError(f"{where}: \"video\" must be a path")
    if ("prompts" in item) == ("auto" in item):
        raise ManifestError(f"{where}: give either \"prompts\" or \"auto\"")
    if "prompts" in item and not isinstance(item["prompts"], (list, str)):
        raise ManifestError(f"{where}: \"prompts\" must be a list of prompts or a JSON file")
    if "auto" in item and not isinstance(item["auto"], dict):
        raise ManifestError(f"{where}: \"auto\" must be an object of auto-video options")
    video_path = _resolve(path, video)
    name = item.get("name", _default_name(video_path))
    problem = _bad_name(name)
    if problem:
        raise ManifestError(f"{where}: output name {name!r} {problem}")
    base = Job(number, name, video_path, spec=item)
    try:
        if "prompts" in item:
            return _with_prompts(base, path, item["prompts"], where)
        return Job(number, name, video_path, auto=auto_options(item["auto"]), spec=item)
    except CliError as exc:
        return Job(number, name, video_path, error=exc.format_message(), spec=item)


def _resolve(manifest: Path, value: str) -> Path:
    return (manifest.parent / Path(value).expanduser()).absolute()


def _default_name(video: Path) -> str:
    # `masklet video` names the sequence folder this way; a file's suffix is dropped.
    return video.stem if video.suffix else video.name


def _bad_name(name: object) -> str | None:
    if not isinstance(name, str) or not name:
        return "must be a non-empty string"
    if name in (".", "..") or name.startswith(".") or re.search(r"[/\\\x00]", name):
        return "must be a plain folder name (no slashes, not starting with '.')"
    if name in RESERVED:
        return "is used by masklet batch itself"
    return None


def _with_prompts(base: Job, manifest: Path, value: list | str, where: str) -> Job:
    if isinstance(value, str):
        prompts = read_prompt_file(_resolve(manifest, value))
    else:
        prompts = prompts_from_items(value, manifest, where=where)
    if not prompts:
        raise CliError("no prompts: give at least one")
    return Job(base.line, base.name, base.video, prompts=tuple(prompts), spec=base.spec)


def auto_parameters() -> dict[str, click.Parameter]:
    """The per-video options of `masklet auto-video`, by parameter name."""
    from masklet.cli.auto import auto_video_cmd

    return {p.name: p for p in auto_video_cmd.params if p.name not in _NOT_AUTO}


def auto_options(given: dict) -> dict:
    """`given` ("max_objects" or "max-objects" style keys) checked with the very types and
    ranges of the `masklet auto-video` options, defaults filled in."""
    params = auto_parameters()
    options = {name: value for name, value in _auto_defaults().items() if name in params}
    for key, value in given.items():
        name = key.replace("-", "_")
        if name not in params:
            raise CliError(f"auto: unknown option {key!r} (use {', '.join(sorted(params))})")
        options[name] = _check_value(params[name], key, value)
    return options


def _auto_defaults() -> dict:
    """The option values of `masklet auto-video VIDEO -o OUT` given nothing else, as click
    resolves them (a flag's declared default is a sentinel, not False)."""
    from masklet.cli.auto import auto_video_cmd

    with auto_video_cmd.make_context("auto-video", ["VIDEO", "-o", "OUT"]) as ctx:
        return dict(ctx.params)


def _check_value(param: click.Parameter, key: str, value: object) -> object:
    kind = param.type
    if isinstance(kind, click.types.BoolParamType) or getattr(param, "is_flag", False):
        if not isinstance(value, bool):
            raise CliError(f"auto: {key} must be true or false, got {json.dumps(value)}")
        return value
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(kind, click.types.IntParamType) and not (number and value == int(value)):
        raise CliError(f"auto: {key} must be an integer, got {json.dumps(value)}")
    if not number and value is not None:
        raise CliError(f"auto: {key} must be a number, got {json.dumps(value)}")
    if value is None:
        return None
    try:
        return kind.convert(value, param, None)
    except click.BadParameter as exc:
        raise CliError(f"auto: {key}: {exc.format_message()}") from None
