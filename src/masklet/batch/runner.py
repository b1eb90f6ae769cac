"""The Ray side of `masklet batch`: connect, start one model-holding actor per worker, and
hand videos out one at a time.

Dynamic hand-out (a worker gets its next video when it returns the last one) balances long
and short videos without knowing their lengths. A worker process that dies mid-video is
restarted by Ray (`max_restarts`); the video it held goes back to the front of the queue
for whichever worker is free next, so it is tracked again from scratch and recorded once.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from masklet.batch.manifest import Job
from masklet.batch.results import sweep_partial
from masklet.batch.work import RunOptions, process_job

MAX_ATTEMPTS = 3  # a video whose worker dies this often fails (it may be what kills it)
MAX_REPLACEMENTS = 8  # fresh actors started after Ray gave up restarting one
ACTOR_RESTARTS = 3  # Ray restarts a dead worker process this often before we replace it
POLL_S = 0.5  # ray.wait timeout: how often a stop request is looked at while waiting
STOP_WAIT_S = 10.0  # after Ctrl-C, how long to wait for a killed worker's process to end


class WorkerStartError(RuntimeError):
    """The workers could not load the model (bad checkpoint, preset, device)."""


@dataclass(frozen=True)
class ModelSpec:
    """How each worker builds its model (the `--model` options)."""

    preset: str | None = None
    checkpoint: str | None = None
    random_weights: bool = False
    device: str = "auto"


@dataclass(frozen=True)
class Pool:
    """The actors' shape: how many, and what each reserves."""

    workers: int
    cpus: float
    gpus: float
    started_ray: bool


def connect(address: str | None, workers: int | None) -> Pool:
    """Join the cluster at `address`, or start a small local Ray instance (no dashboard,
    worker logs kept out of the terminal). GPU actors where the cluster has GPUs."""
    import ray

    started = False
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        else:
            cpus = os.cpu_count() or 1
            per = max(1, cpus // workers) if workers else 1
            ray.init(address="local", num_cpus=(workers or cpus) * per, include_dashboard=False,
                     log_to_driver=False, logging_level="ERROR")
            started = True
    resources = ray.cluster_resources()
    total_cpus, total_gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    if total_gpus >= 1:
        n = workers or int(total_gpus)
        return Pool(n, 1.0, min(1.0, total_gpus / n), started)
    n = workers or max(1, int(total_cpus))
    if n > total_cpus:
        raise WorkerStartError(f"--workers {n}: the Ray cluster has {total_cpus:g} CPUs")
    return Pool(n, max(1.0, float(int(total_cpus) // n)), 0.0, started)


class Worker:
    """One actor: a loaded model, tracking the videos it is handed."""

    def __init__(self, spec: ModelSpec, threads: int) -> None:
        import torch

        from masklet.cli.common import CliError, load_model, one_line

        torch.set_num_threads(max(1, threads))
        checkpoint = Path(spec.checkpoint) if spec.checkpoint else None
        self.model, self.error = None, None
        try:
            self.model = load_model(spec.preset, checkpoint, spec.device, True,
                                    spec.random_weights)
        except CliError as exc:  # kept for `ready`: one line for the user, not a traceback
            self.error = exc.format_message()
        except Exception as exc:  # noqa: BLE001
            self.error = one_line(exc)

    def where(self) -> tuple[str, int]:
        """(host name, process id) of this actor's current process."""
        return socket.gethostname(), os.getpid()

    def ready(self) -> str | None:
        """None once the model is loaded, else why it could not be."""
        return self.error

    def run(self, job: Job, out_dir: str, options: RunOptions) -> dict:
        return process_job(self.model, job, Path(out_dir), options)


def start_workers(pool: Pool, spec: ModelSpec, stop: Callable[[], bool] = bool) -> list:
    """`pool.workers` actors, each with its model loaded (waited for, so that a model that
    cannot load is one clear error instead of every video failing).

    Raises KeyboardInterrupt, the actors killed, once `stop()` is true while they load.
    """
    import ray

    actors = [new_actor(pool, spec) for _ in range(pool.workers)]
    waiting = [a.ready.remote() for a in actors]
    try:
        pending = waiting
        while pending:
            if stop():
                for actor in actors:
                    ray.kill(actor, no_restart=True)
                raise KeyboardInterrupt
            _, pending = ray.wait(waiting, num_returns=len(waiting), timeout=POLL_S)
        errors = [e for e in ray.get(waiting) if e]
    except ray.exceptions.RayActorError as exc:
        errors = [_message(exc)]
    if errors:
        for actor in actors:
            ray.kill(actor, no_restart=True)
        raise WorkerStartError(f"the workers could not load the model: {errors[0]}")
    return actors


def new_actor(pool: Pool, spec: ModelSpec):
    """One worker actor (its model loads in the background); Ray restarts its process up
    to `ACTOR_RESTARTS` times, and retries nothing itself (the dispatcher re-queues)."""
    import ray

    remote = ray.remote(Worker).options(num_cpus=pool.cpus, num_gpus=pool.gpus,
                                        max_restarts=ACTOR_RESTARTS, max_task_retries=0)
    return remote.remote(spec, int(pool.cpus))


def _failed(job: Job, error: str, attempts: int) -> dict:
    return {"line": job.line, "name": job.name, "video": str(job.video), "status": "failed",
            "frames": 0, "objects": 0, "seconds": 0.0, "error": error, "attempts": attempts}


def _message(exc: BaseException) -> str:
    from masklet.cli.common import one_line

    text = getattr(exc, "message", None) or one_line(exc)
    return " ".join(str(text).split())


class Dispatcher:
    """Hands `jobs` to `actors` one at a time and reports each video's record once.

    A worker whose process died is not handed anything until a probe (`where`) says Ray has
    restarted it: a call made while it restarts fails at once, which would burn the video's
    attempts without running it.
    """

    def __init__(self, actors: list, make_actor: Callable[[], object], out_dir: Path,
                 options: RunOptions) -> None:
        import ray

        self.idle = deque(actors)
        self.make_actor = make_actor
        self.out_dir = Path(out_dir)
        self.options = options
        self.in_flight: dict = {}  # object ref -> (actor, job)
        self.probes: dict = {}  # object ref of a restarting actor's where() -> actor
        # id(actor) -> its process's (host, pid), to wait for its end after Ctrl-C.
        self.places: dict[int, tuple[str, int]] = {}
        for actor, ref in [(a, a.where.remote()) for a in actors]:
            try:
                self.places[id(actor)] = tuple(ray.get(ref))
            except ray.exceptions.RayActorError:
                pass  # died since it loaded: `run` finds out and has it restarted
        self.attempts: dict[str, int] = {}
        self.replaced = 0
        self.retried = 0

    def run(self, jobs: list[Job], report: Callable[[dict], None],
            stop: Callable[[], bool] = bool) -> None:
        """Run every job, reporting each record as it comes; raises KeyboardInterrupt as
        soon as `stop()` is true (checked at least every `POLL_S`), leaving the workers
        running for the caller to end with `Dispatcher.stop`."""
        import ray

        queue = deque(jobs)
        while queue or self.in_flight:
            if stop():
                raise KeyboardInterrupt
            while self.idle and queue:
                actor, job = self.idle.popleft(), queue.popleft()
                self.attempts[job.name] = self.attempts.get(job.name, 0) + 1
                ref = actor.run.remote(job, str(self.out_dir), self.options)
                self.in_flight[ref] = (actor, job)
            if not (self.in_flight or self.probes):
                for job in queue:  # every worker is gone for good
                    report(_failed(job, "no worker left: they all died", 0))
                return
            done, _ = ray.wait([*self.in_flight, *self.probes], num_returns=1,
                               timeout=POLL_S)
            for ref in done:
                if ref in self.probes:
                    self._probed(ref)
                    continue
                record = self._collect(ref, queue)
                if record is not None:
                    report({**record, "attempts": self.attempts[record["name"]]})

    def _collect(self, ref, queue: deque) -> dict | None:
        import ray

        actor, job = self.in_flight.pop(ref)
        try:
            record = ray.get(ref)
        except ray.exceptions.RayActorError as exc:
            return self._worker_died(actor, job, queue, exc)
        self.idle.append(actor)
        self.places[id(actor)] = (record["node"], record["pid"])
        return record

    def _probe(self, actor) -> None:
        self.probes[actor.where.remote()] = actor

    def _probed(self, ref) -> None:
        import ray

        actor = self.probes.pop(ref)
        try:
            self.places[id(actor)] = tuple(ray.get(ref))
        except ray.exceptions.ActorUnavailableError:
            time.sleep(0.2)  # still restarting (loading its model): ask again
            self._probe(actor)
        except ray.exceptions.RayActorError:
            # Ray gave up restarting it: a fresh actor instead, a bounded number of times.
            if self.replaced < MAX_REPLACEMENTS:
                self.replaced += 1
                self._probe(self.make_actor())
        else:
            self.idle.append(actor)

    def _worker_died(self, actor, job: Job, queue: deque, exc: Exception) -> dict | None:
        # The process is gone: its half-written folder can go, and the video starts over
        # on whichever worker is free first.
        sweep_partial(self.out_dir, [job.name])
        self._probe(actor)
        if self.attempts[job.name] >= MAX_ATTEMPTS:
            return _failed(job, f"its worker died {MAX_ATTEMPTS} times ({_message(exc)})",
                           self.attempts[job.name])
        self.retried += 1
        queue.appendleft(job)
        return None

    def close(self) -> None:
        """End the workers (their CPUs and GPUs go back to the cluster at once)."""
        import ray

        for actor in self._actors():
            ray.kill(actor, no_restart=True)

    def _actors(self) -> list:
        actors = [*self.idle, *self.probes.values(), *(a for a, _ in self.in_flight.values())]
        return list({id(a): a for a in actors}.values())

    def stop(self) -> list[str]:
        """Kill every worker (Ctrl-C); returns the names of the videos they held, whose
        half-written folders are then removed."""
        import ray

        held = [job.name for _, job in self.in_flight.values()]
        self.close()
        # Ray reports an actor dead before its process has ended: on a busy machine one ran
        # on for seconds, filling (even finishing) its temporary folder after the sweep. So
        # a process on this machine is killed outright and waited for; on another node,
        # Ray's word is all there is.
        host = socket.gethostname()
        for actor, _ in self.in_flight.values():
            node, pid = self.places.get(id(actor), (None, None))
            if node == host:
                kill_and_wait(pid, STOP_WAIT_S)
        if self.in_flight:
            ray.wait(list(self.in_flight), num_returns=len(self.in_flight), timeout=STOP_WAIT_S)
        sweep_partial(self.out_dir, held)
        return held


def kill_and_wait(pid: int, timeout: float) -> bool:
    """SIGKILL process `pid` (on this machine) and wait until it has ended or is a zombie;
    False if it still runs after `timeout` seconds."""
    try:
        os.kill(pid, getattr(signal, "SIGKILL", signal.SIGTERM))  # Windows has no SIGKILL
    except (ProcessLookupError, PermissionError):  # gone (its number may be reused)
        return True
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.kill(pid, 0)
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (ProcessLookupError, PermissionError):
            return True
        except (OSError, IndexError):
            state = ""  # no /proc (macOS): os.kill alone tells
        if state == "Z":  # ended; its parent (Ray's raylet) has not reaped it yet
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
