"""`masklet batch`: track or auto-mask every video of a manifest with a pool of workers."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from masklet.cli.common import (
    CliError,
    CliFailure,
    interrupt_requests,
    model_options,
    user_errors,
)


@click.command("batch")
@click.argument("manifest", type=click.Path(path_type=Path))
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), required=True,
              metavar="OUT_DIR",
              help="Output folder: OUT_DIR/<name>/ per video (as `masklet video -o` writes "
                   "it) and OUT_DIR/results.jsonl.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes, each holding a model (default: one per GPU, else one "
                   "per CPU).")
@click.option("--address", envvar="RAY_ADDRESS", default=None, metavar="RAY_ADDRESS",
              help="Join this Ray cluster (e.g. HEAD_IP:6379, or auto); default: start Ray "
                   "on this machine. Paths must be visible to every node.")
@click.option("--overlay/--no-overlay", default=True, show_default=True,
              help="Also write overlay.mp4 per video.")
@click.option("--coco/--no-coco", default=True, show_default=True,
              help="Also write masks_coco.json per video.")
@model_options
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")
@user_errors
def batch_cmd(manifest, out_dir, workers, address, overlay, coco, preset, checkpoint,
              random_weights, device, dtype, quiet):
    """Track the videos listed in MANIFEST (JSONL: one {"video", "prompts" | "auto",
    "name"} per line). Rerunning the same command skips finished videos."""
    from masklet.batch import ManifestError, read_manifest
    from masklet.batch.report import Tally, echo_summary
    from masklet.batch.results import ResultsLog, is_done, job_key, sweep_partial
    from masklet.batch.work import RunOptions

    try:
        jobs = read_manifest(manifest)
    except ManifestError as exc:
        raise CliError(str(exc)) from None
    _check_model_options(preset, checkpoint, random_weights)
    _import_ray()
    lock = _lock(out_dir)
    options = RunOptions(overlay=overlay, coco=coco, dtype=dtype)
    run = {"model": preset, "checkpoint": str(checkpoint) if checkpoint else None,
           "random_weights": random_weights, "overlay": overlay, "coco": coco, "dtype": dtype}
    log, tally = ResultsLog(out_dir), Tally()
    latest = log.latest()
    # The resolved prompts too: editing a prompts file redoes its video.
    keys = {job.name: job_key({"line": job.spec, "prompts": repr(job.prompts),
                               "video": str(job.video)}, run) for job in jobs}
    todo = [j for j in jobs if not is_done(out_dir, j.name, keys[j.name], latest.get(j.name))]
    tally.skipped = len(jobs) - len(todo)
    sweep_partial(out_dir, [j.name for j in jobs])  # left by a run that was killed outright

    def record(result: dict) -> None:
        result["key"] = keys[result["name"]]
        log.append(result)
        tally.records.append(result)

    interrupted = False
    try:
        if todo:
            interrupted = _run(todo, out_dir, options, preset, checkpoint, random_weights,
                               device, workers, address, quiet, record, tally)
    finally:
        lock.close()
    if not quiet:
        echo_summary(tally, len(jobs), interrupted)
    if interrupted:
        click.echo("masklet: interrupted; finished videos are kept, no partial folder was "
                   "left: rerun the same command to do the rest", err=True)
        sys.exit(130)
    if tally.of("failed"):
        raise CliFailure(f"{len(tally.of('failed'))} of {len(todo)} video(s) failed (see "
                         f"{log.path})")


def _run(todo, out_dir, options, preset, checkpoint, random_weights, device, workers,
         address, quiet, record, tally) -> bool:
    """Run `todo` on Ray; True when Ctrl-C stopped it."""
    from masklet.batch.report import Progress
    from masklet.batch.runner import (
        Dispatcher,
        ModelSpec,
        WorkerStartError,
        connect,
        new_actor,
        start_workers,
    )
    from masklet.batch.work import process_job

    progress = Progress(len(todo), quiet)

    def report(result: dict) -> None:
        record(result)
        progress.update(result)

    for job in [j for j in todo if j.error is not None]:  # fails without a worker
        report({**process_job(None, job, out_dir, options), "attempts": 0})
    todo = [j for j in todo if j.error is None]
    import ray
    spec = ModelSpec(preset, str(checkpoint.absolute()) if checkpoint else None, random_weights,
                     device)
    pool, dispatcher = None, None
    with interrupt_requests() as interrupt:
        try:
            pool = connect(address, workers)
            if interrupt.is_set():  # Ctrl-C while Ray started
                raise KeyboardInterrupt
            actors = start_workers(pool, spec, interrupt.is_set)
            dispatcher = Dispatcher(actors, lambda: new_actor(pool, spec), out_dir, options)
            dispatcher.run(todo, report, interrupt.is_set)
        except KeyboardInterrupt:
            if dispatcher is not None:
                dispatcher.stop()
            return True
        except WorkerStartError as exc:
            raise CliError(str(exc)) from None
        except (ConnectionError, ray.exceptions.RaySystemError) as exc:
            raise CliFailure(f"Ray: {' '.join(str(exc).split())}") from None
        finally:
            progress.close()
            if dispatcher is not None:
                tally.retried = dispatcher.retried
                dispatcher.close()
            if pool is not None and pool.started_ray:
                ray.shutdown()
    return False


def _import_ray():
    try:
        import ray
    except ImportError:
        raise CliError("masklet batch needs Ray: pip install 'masklet[batch]'") from None
    return ray


def _check_model_options(preset, checkpoint, random_weights) -> None:
    """The `--model` checks `load_model` makes, before any worker starts."""
    from masklet.config import get_config

    if random_weights and checkpoint is not None:
        raise CliError("--random-weights and --checkpoint exclude each other")
    if random_weights and preset is None:
        raise CliError("--random-weights needs --model PRESET (see `masklet info`)")
    if preset is not None:
        get_config(preset)  # KeyError: unknown preset, reported in one line
    if checkpoint is not None and not checkpoint.is_file():
        raise CliError(f"checkpoint not found: {checkpoint}")


def _lock(out_dir: Path):
    """Create OUT_DIR and hold its lock: two runs writing one folder would redo each
    other's videos."""
    import fcntl

    if out_dir.exists() and not out_dir.is_dir():
        raise CliError(f"output path {out_dir} is a file, not a folder (give a folder name)")
    out_dir.mkdir(parents=True, exist_ok=True)
    handle = open(out_dir / ".masklet-batch.lock", "a")  # noqa: SIM115 - held until the end
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise CliError(f"another masklet batch is writing {out_dir}") from None
    return handle
