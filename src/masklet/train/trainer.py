"""The training loop: data, forward, loss, gradient sync, clipping, optimizer, checkpoints.

Determinism: each sample's prompts, augmentations and dropout masks are drawn from
generators seeded by (seed, step, slot in the global batch), so the result of a step
does not depend on how many processes share the batch or on whether the run was
resumed. (The trainer therefore reseeds torch's global generator before each sample.)

Checkpoints hold ``{"model", "optimizer", "scheduler", "step", "config", "rng"}`` and
are written atomically; ``"model"`` is in the official layout, so a checkpoint loads
directly with ``masklet.build_model(preset, checkpoint=path)``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import masklet.train.nano  # noqa: F401  (registers the "masklet_nano" preset)
from masklet.build import build_model
from masklet.checkpoint import save_safetensors
from masklet.config import HieraConfig, ModelConfig, get_config
from masklet.export.atomic import atomic_path, atomic_write
from masklet.train.augment import TrainSample
from masklet.train.config import TrainConfig
from masklet.train.data import TrainStream, build_source
from masklet.train.distributed import (
    DistContext,
    all_reduce_sum,
    barrier,
    broadcast_parameters,
    init_distributed,
    local_slots,
    shutdown,
    sum_gradients,
)
from masklet.train.health import EmbedScaleMonitor
from masklet.train.losses import TERM_NAMES, LossTerms, clip_losses
from masklet.train.model_step import forward_clip
from masklet.train.optim import build_optimizer, build_scheduler
from masklet.train.prompts import plan_prompts

log = logging.getLogger("masklet.train")

CHECKPOINT_NAME = "checkpoint.pt"
WEIGHTS_NAME = "model.safetensors"
LOG_NAME = "train_log.jsonl"
_PROMPT_STREAM = 1  # separates the prompt generator from the data generator of a slot


@dataclass
class StepLog:
    """What one optimizer step did (losses are averaged per object, as optimised)."""

    step: int
    loss: float
    terms: dict[str, float]
    lr: float
    num_objects: int
    seconds: float
    embed_to_pe: float  # image-embedding std / positional-encoding std (train/health.py)


@dataclass
class TrainResult:
    history: list[StepLog]
    final_step: int
    checkpoint: Path | None


def model_config_for(config: TrainConfig) -> ModelConfig:
    """The preset, with the resolution and stochastic depth the run asks for."""
    model_cfg = get_config(config.model)
    if config.image_size is not None:
        model_cfg = model_cfg.with_image_size(config.image_size)
    if config.drop_path_rate is not None:
        if not isinstance(model_cfg.trunk, HieraConfig):
            # EdgeTAM's RepViT (timm's repvit_m1 as EdgeTAM builds it) has no drop path.
            raise ValueError(f"drop_path_rate applies to Hiera trunks; {model_cfg.name!r} "
                             "has a RepViT trunk without stochastic depth")
        trunk = dataclasses.replace(model_cfg.trunk, drop_path_rate=config.drop_path_rate)
        model_cfg = dataclasses.replace(model_cfg, trunk=trunk)
    return model_cfg


def freeze_batch_norms(model: torch.nn.Module) -> int:
    """Put every batch norm in eval mode (running statistics used, not updated; scale and
    shift still train); returns how many. Why: a sample is one clip, a small batch of
    correlated frames, whose statistics would replace the pretrained ones, and the
    processes of a run do not synchronise statistics (rank 0's would be saved)."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.eval()
    return len(norms)


def _sample_seed(seed: int, step: int, slot: int) -> int:
    return int(np.random.SeedSequence([seed, step, slot]).generate_state(1)[0])


class Trainer:
    """Owns the model, optimizer, schedule and data stream of one training process."""

    def __init__(self, config: TrainConfig, *, ctx: DistContext | None = None) -> None:
        self.config = config
        self.ctx = ctx or init_distributed(config.backend, config.device)
        self.device = self.ctx.device
        self.model_config = model_config_for(config)
        torch.manual_seed(config.seed)  # same initial weights on every process
        # No init checkpoint: training from scratch, which is what random weights are for.
        self.model = build_model(self.model_config, checkpoint=config.init_checkpoint,
                                 random_weights=config.init_checkpoint is None,
                                 device=self.device, eval_mode=False)
        if config.freeze_batch_norm:
            freeze_batch_norms(self.model)  # EdgeTAM's RepViT; SAM 2 has none
        broadcast_parameters(self.model, self.ctx)
        self.embed_monitor = EmbedScaleMonitor(self.model)
        self.optimizer = build_optimizer(self.model, config.optim)
        self.scheduler = build_scheduler(self.optimizer, config.optim, config.max_steps)
        self.stream = self._build_stream()
        self.step = 0
        self.output_dir = Path(config.output_dir)
        if config.resume and self.checkpoint_path.is_file():
            self.load_checkpoint(self.checkpoint_path)

    def _build_stream(self) -> TrainStream:
        c = self.config
        size = self.model_config.image_size
        sources = [
            (build_source(spec, size=size, num_frames=c.num_frames, max_objects=c.max_objects,
                          seed=c.seed), spec.weight)
            for spec in c.sources
        ]
        return TrainStream(sources, seed=c.seed, batch_size=c.batch_size, size=size,
                           augment=c.augment, slots=local_slots(c.batch_size, self.ctx))

    @property
    def checkpoint_path(self) -> Path:
        return self.output_dir / CHECKPOINT_NAME

    # ------------------------------------------------------------------ one step
    def _autocast(self):
        if self.config.amp and self.device.type == "cuda":
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return nullcontext()

    def sample_losses(self, step: int, slot: int, sample: TrainSample) -> LossTerms:
        """Summed loss terms of one sample (prompts, dropout seeded by step and slot)."""
        c = self.config
        torch.manual_seed(_sample_seed(c.seed, step, slot))
        rng = np.random.default_rng([c.seed, step, slot, _PROMPT_STREAM])
        images = sample.images.to(self.device, non_blocking=True)
        masks = sample.masks.to(self.device, non_blocking=True)
        plan = plan_prompts(images.shape[0], c.prompts, rng)
        with self._autocast():
            passes = forward_clip(self.model, images, masks, plan, c.prompts, rng)
        return clip_losses(passes, masks, c.loss)

    def compute_gradients(self, step: int, batch: list[tuple[int, TrainSample]]) -> dict:
        """Backward pass over this process's samples, then gradients summed over processes.

        Each sample's loss is divided by the number of objects in the global batch, so
        the summed gradient is that of the per-object mean loss (the official loss).
        Returns the global loss, its terms and the object count.
        """
        self.optimizer.zero_grad(set_to_none=True)
        local_objects = torch.tensor(float(sum(s.num_objects for _, s in batch)),
                                     device=self.device)
        num_objects = max(all_reduce_sum(local_objects, self.ctx).item(), 1.0)
        summed = torch.zeros(len(TERM_NAMES) + 1, device=self.device)
        for slot, sample in batch:
            terms = self.sample_losses(step, slot, sample)
            loss = terms.weighted_total(self.config.loss) / num_objects
            loss.backward()
            parts = [getattr(terms, n).detach() for n in TERM_NAMES]
            summed += torch.stack([*parts, loss.detach() * num_objects]).float()
        sum_gradients(self.model, self.ctx)
        total = all_reduce_sum(summed, self.ctx).cpu() / num_objects
        loss = float(total[-1])
        if not np.isfinite(loss):
            raise FloatingPointError(f"loss is {loss} at step {step}")
        terms = dict(zip(TERM_NAMES, total[:-1].tolist()))
        return {"loss": loss, "terms": terms, "num_objects": int(num_objects)}

    def optimizer_step(self) -> None:
        clip = self.config.optim.grad_clip
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=clip)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1

    def train_step(self, step: int, batch: list[tuple[int, TrainSample]]) -> StepLog:
        if step != self.step:
            raise RuntimeError(f"batch of step {step} given to a trainer at step {self.step}")
        start = time.perf_counter()
        lr = self.config.optim.base_lr * self.scheduler.lr_lambdas[0](step)
        out = self.compute_gradients(step, batch)
        self.optimizer_step()
        return StepLog(step, out["loss"], out["terms"], lr, out["num_objects"],
                       time.perf_counter() - start,
                       self.embed_monitor.check(step, warn=self.ctx.is_main))

    # ------------------------------------------------------------------ loop
    def fit(self, until: int | None = None) -> TrainResult:
        """Train to ``max_steps`` (or to step ``until``, e.g. to split a run), writing
        checkpoints every ``save_every`` steps and at the end, where the weights alone also
        go to ``model.safetensors``."""
        c = self.config
        stop = c.max_steps if until is None else min(until, c.max_steps)
        history: list[StepLog] = []
        saved_at = self.step
        for step, batch in self.stream.loader(self.step, stop, c.num_workers):
            entry = self.train_step(step, batch)
            history.append(entry)
            self._log(entry)
            if c.save_every and self.step % c.save_every == 0:
                self.save_checkpoint()
                saved_at = self.step
        if self.step != saved_at or not self.checkpoint_path.exists():
            self.save_checkpoint()
        if self.ctx.is_main:  # the weights where the run stopped, ready for build_model
            save_safetensors(self.model.state_dict(), self.output_dir / WEIGHTS_NAME)
        return TrainResult(history, self.step, self.checkpoint_path)

    def _log(self, entry: StepLog) -> None:
        if not self.ctx.is_main:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with open(self.output_dir / LOG_NAME, "a", encoding="utf-8") as f:
            f.write(json.dumps(dataclasses.asdict(entry)) + "\n")
        every = self.config.log_every
        if every and (entry.step % every == 0 or entry.step + 1 == self.config.max_steps):
            terms = " ".join(f"{k[5:]}={v:.4f}" for k, v in entry.terms.items())
            log.info("step %d/%d loss %.4f (%s) lr %.3g embed/pe %.2f %.2fs", entry.step + 1,
                     self.config.max_steps, entry.loss, terms, entry.lr, entry.embed_to_pe,
                     entry.seconds)

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, path: Path | None = None) -> None:
        """Write the full training state atomically (rank 0 only)."""
        if self.ctx.is_main:
            state = {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "step": self.step,
                "config": self.config.to_dict(),
                "rng": _rng_state(),
            }
            with atomic_path(path or self.checkpoint_path) as tmp:
                torch.save(state, tmp)
        barrier(self.ctx)  # nobody reads a checkpoint that is still being written

    def load_checkpoint(self, path: Path) -> None:
        """Restore model, optimizer, schedule, step and RNG state from ``path``."""
        state = torch.load(path, map_location=self.device, weights_only=True)
        stored = state.get("config", {})
        changed = sorted(k for k, v in self.config.to_dict().items() if stored.get(k) != v)
        if changed:
            log.warning("resuming %s with changed settings: %s (the learning rates and "
                        "schedule follow the new ones)", path, ", ".join(changed))
        self.model.load_state_dict(state["model"], strict=True)
        # This run's config built the optimizer's groups and the schedule: keep their
        # learning rates, weight decay and schedule length, and take only the position.
        configured = [(g["names"], g["initial_lr"], g["weight_decay"])
                      for g in self.optimizer.param_groups]
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self._load_schedule_position(state["scheduler"], configured)
        _set_rng_state(state["rng"])
        log.info("resumed from %s at step %d", path, self.step)

    def _load_schedule_position(self, stored: dict, configured: list[tuple]) -> None:
        """Restore where the schedule stands, on the schedule this run's config describes.

        A stored LambdaLR also carries its lambda's fields (the old ``max_steps``) and base
        learning rates; restoring those would silently ignore a resume with a larger
        ``max_steps`` ("train longer") or a new ``base_lr``. With unchanged settings the
        two agree, so resuming stays exact.
        """
        if [names for names, _, _ in configured] != [g["names"]
                                                     for g in self.optimizer.param_groups]:
            raise ValueError("the checkpoint's optimizer groups the parameters differently "
                             "(learning rates merged or split); resume with its settings")
        position = {k: v for k, v in stored.items() if k != "base_lrs"}
        position["lr_lambdas"] = [None] * len(stored["lr_lambdas"])  # None: keep ours
        self.scheduler.load_state_dict(position)
        for group, (_, lr, decay), schedule in zip(self.optimizer.param_groups, configured,
                                                   self.scheduler.lr_lambdas, strict=True):
            group.update(initial_lr=lr, lr=lr * schedule(self.step), weight_decay=decay)
        self.scheduler._last_lr = [g["lr"] for g in self.optimizer.param_groups]


def _rng_state() -> dict:
    """Global generator states as tensors and plain values (loadable with weights_only)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def run_training(config: TrainConfig, until: int | None = None) -> TrainResult:
    """Train as ``config`` says, on one process or as one of many under torchrun; with
    ``until``, stop after that step (the schedule still spans ``max_steps``)."""
    ctx = init_distributed(config.backend, config.device)
    try:
        trainer = Trainer(config, ctx=ctx)
        if ctx.is_main:
            out = Path(config.output_dir)
            out.mkdir(parents=True, exist_ok=True)
            # Stored with resume on: `--config <out>/train_config.json` must continue this
            # run, not restart it over its checkpoint (a --no-resume start is a one-off).
            with atomic_write(out / "train_config.json", "w") as f:
                json.dump(dataclasses.replace(config, resume=True).to_dict(), f, indent=2)
        return trainer.fit(until)
    finally:
        shutdown(ctx)
