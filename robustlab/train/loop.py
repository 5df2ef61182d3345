"""The training loop: ``train(config) -> run directory``.

One code path for one process and for DistributedDataParallel (``torchrun``): data sharded by
rank, gradients averaged by DDP, every file written by rank 0. Per step: the objective's loss
(under autocast when ``train.amp`` is set), backward, optional gradient clipping, optimizer and
per-step schedule, EMA. Logged values stay on the device and are synchronized only every
``train.log_every`` steps and at the end of an epoch. At the end of each epoch: robust
validation on the held-out split, ``best.pt`` selection, callbacks, ``last.pt``. Checkpoints
hold everything needed to resume bit-exactly (weights, optimizer, scheduler, EMA, scaler,
every RNG, the position in the epoch).
"""

from __future__ import annotations

import contextlib
import gc
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from robustlab.attacks.base import make_generator
from robustlab.config import Config, check_objective, check_same_config, config_from_dict
from robustlab.errors import ConfigError, RobustlabError
from robustlab.io import append_jsonl, atomic_write_text, write_json
from robustlab.train.callbacks import EpochContext, build_callbacks
from robustlab.train.checkpoint import (
    build_model,
    export_weights,
    load_checkpoint,
    load_initial_weights,
    read_run_config,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from robustlab.train.distributed import (
    DistInfo,
    barrier,
    cleanup_distributed,
    setup_distributed,
)
from robustlab.train.ema import ModelEMA
from robustlab.train.metrics import (
    accumulate,
    check_finite,
    epoch_line,
    gather_objects,
    merge,
    reduce_means,
    tensorboard_writer,
)
from robustlab.train.optim import build_optimizer, build_scheduler
from robustlab.train.rundir import (
    RunDir,
    default_run_dir,
    prepare_run_dir,
    remove_if_unused,
    truncate_metrics,
)
from robustlab.train.summary import run_summary
from robustlab.train.validation import validate

__all__ = ["train", "validate", "Trainer"]


def train(
    config: Config | dict[str, Any],
    run_dir: str | Path | None = None,
    resume: bool = False,
    callbacks: list[tuple[Any, Any]] | None = None,
) -> Path:
    """Train according to ``config``; returns the run directory (complete on return).

    ``run_dir`` defaults to ``runs/<config.name>``. With ``resume`` the run continues from
    ``RUN/checkpoints/last.pt`` (or starts if there is none yet); a complete run is returned
    as is. Launched by ``torchrun`` this trains with DistributedDataParallel.

    ``callbacks``: ``[(CallbackConfig, callback), ...]`` built by the caller (the place the
    run is composed: ``robustlab train``, :func:`robustlab.api.train`); default: the config's
    ``callbacks`` from the callback registry as it stands (this function imports no plugin).
    """
    cfg = config if isinstance(config, Config) else config_from_dict(config)
    objective = check_objective(cfg)  # unknown objective / bad hyperparameters, before any I/O
    if callbacks is None:  # from the registry: callbacks registered by modules already imported
        callbacks = build_callbacks(cfg)
    started_pg = not torch.distributed.is_initialized()
    dist = setup_distributed(cfg.train.device)
    trainer: Trainer | None = None
    try:
        trainer = Trainer(cfg, objective, callbacks, dist, run_dir, resume)
        return trainer.run()
    finally:
        if started_pg:
            # DDP's reducer holds the process group: free it now, not at interpreter exit, where
            # gloo's teardown aborted a rank in about 1 of 30 two-process runs
            trainer = None
            gc.collect()
            cleanup_distributed()


def _check_setup(cfg: Config, dist: DistInfo) -> None:
    if cfg.data.batch_size % dist.world_size:
        raise ConfigError(
            f"data.batch_size: the global batch {cfg.data.batch_size} must be divisible by "
            f"the number of processes ({dist.world_size})"
        )
    if cfg.train.amp == "fp16" and dist.device.type != "cuda":
        raise ConfigError("train.amp: fp16 needs a CUDA device; use bf16 on the CPU")


class Trainer:
    """State of one training run; :meth:`run` executes it. Use :func:`train` instead."""

    def __init__(
        self,
        cfg: Config,
        objective: Any,
        callbacks: list[Any],
        dist: DistInfo,
        run_dir: str | Path | None,
        resume: bool,
    ) -> None:
        self.cfg, self.objective, self.callbacks, self.dist = cfg, objective, callbacks, dist
        self.resume = resume
        self.rundir = RunDir(run_dir if run_dir is not None else default_run_dir(cfg.name))
        self.device = dist.device
        self.main = dist.is_main
        self.tb: Any = None
        self.last_index: Tensor | None = None

    # ------------------------------------------------------------------------------ setup
    def _prepare(self) -> None:
        cfg, dist = self.cfg, self.dist
        _check_setup(cfg, dist)
        ckpt_path = self.rundir.checkpoint("last")
        self.created = False
        if self.main:
            root, self.created = prepare_run_dir(self.rundir.root, self.resume)
            self.rundir = RunDir(root)
        barrier()
        self.ckpt = load_checkpoint(ckpt_path) if self.resume and ckpt_path.is_file() else None

        from robustlab.data import Augment, DeviceLoader, load_data

        self.data = load_data(
            cfg.data.dataset, cfg.data.data_dir, cfg.data.n_train, cfg.data.n_val, cfg.seed
        )
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank
        model = build_model(cfg)
        if cfg.model.weights and self.ckpt is None:
            load_initial_weights(model, cfg.model.weights, cfg.model.remap)
        model = model.to(self.device)
        if cfg.train.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if dist.distributed and cfg.train.sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model
        self.objective.setup(model, self.data.train, self.device)

        aug = cfg.data.augment
        augment = Augment(aug.crop_padding, aug.hflip) if aug.crop_padding or aug.hflip else None
        per_rank = cfg.data.batch_size // dist.world_size
        self.loader = DeviceLoader(
            self.data.train,
            per_rank,
            shuffle=True,
            augment=augment,
            seed=cfg.seed,
            device=self.device,
            drop_last=True,
            rank=dist.rank,
            world_size=dist.world_size,
        )
        self.steps_per_epoch = len(self.loader)
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"data.batch_size: {cfg.data.batch_size} is larger than the "
                f"{len(self.data.train)} training images; lower it or raise data.n_train"
            )
        self.total_steps = self.steps_per_epoch * cfg.train.epochs
        self.optimizer = build_optimizer(model, cfg.optim, self.device)
        self.scheduler = build_scheduler(
            self.optimizer, cfg.schedule, self.steps_per_epoch, cfg.train.epochs, cfg.optim.lr,
            cfg.optim.momentum,
        )  # fmt: skip
        self.ema = (
            ModelEMA(model, cfg.train.ema_decay, cfg.train.ema_warmup)
            if (cfg.train.ema_decay > 0)
            else None
        )
        self.scaler = torch.amp.GradScaler("cuda") if cfg.train.amp == "fp16" else None
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.train.amp)

        inner: nn.Module = model
        if cfg.train.compile:
            inner = torch.compile(model)  # type: ignore[assignment]
        self.inner_model = inner
        if dist.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model: nn.Module = DDP(inner, device_ids=ids)
        else:
            self.train_model = inner
        self.generator = make_generator(cfg.seed * 1000 + dist.rank + 1, self.device)
        # Global RNGs (dropout and any library drawing from them), distinct per rank.
        torch.manual_seed(cfg.seed * 1000 + dist.rank + 1)
        np.random.seed((cfg.seed * 1000 + dist.rank + 1) % 2**32)
        random.seed(cfg.seed * 1000 + dist.rank + 1)

    # ------------------------------------------------------------------------------ run
    def run(self) -> Path:
        if self.resume and self.rundir.config.is_file():
            check_same_config(read_run_config(self.rundir.root), self.cfg, self.rundir.root)
        if self.resume and self.rundir.is_complete():
            if self.main:
                print(f"robustlab: run {self.rundir} is already complete")
            return self.rundir.root
        try:
            self._prepare()
        except BaseException:
            if self.main and getattr(self, "created", False):
                remove_if_unused(self.rundir.root, True)
            raise
        cfg = self.cfg
        self.epoch, self.batch, self.step = 0, 0, 0
        self.best: dict[str, Any] | None = None
        self.sums: dict[str, Tensor] = {}
        if self.ckpt is not None:
            self._restore(self.ckpt)
            if self.main:
                truncate_metrics(self.rundir, self.step)
                print(f"robustlab: resuming {self.rundir} in epoch {self.epoch + 1}/"
                      f"{cfg.train.epochs} at step {self.step} (batch {self.batch})")  # fmt: skip
        elif self.main:
            atomic_write_text(self.rundir.config, cfg.to_yaml())
            self.rundir.metrics.unlink(missing_ok=True)
        self.ckpt = None
        if self.main and cfg.train.tensorboard:
            self.tb = tensorboard_writer(self.rundir.tensorboard)
        barrier()
        t_start = time.perf_counter()
        images = 0
        last_record: dict[str, Any] = {}
        while self.epoch < cfg.train.epochs:
            t0 = time.perf_counter()
            start_batch = self.batch
            self._train_epoch()
            dt = time.perf_counter() - t0
            n_img = (self.steps_per_epoch - start_batch) * cfg.data.batch_size
            images += n_img
            last_record = self._end_epoch(dt, n_img)
        total = time.perf_counter() - t_start
        if self.main:
            self._finish(last_record, total, images)
        barrier()
        if self.tb is not None:
            self.tb.close()
        return self.rundir.root

    # ------------------------------------------------------------------------------ epochs
    def _batches(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """This epoch's batches from the current position (skipped batches are regenerated,
        which keeps the augmentation stream identical to an uninterrupted run)."""
        self.loader.set_epoch(self.epoch)
        it = iter(self.loader)
        for _ in range(self.batch):
            next(it)
        yield from it

    def _train_epoch(self) -> None:
        from robustlab.objectives import StepState

        cfg = self.cfg
        model, tm = self.model, self.train_model
        tm.train()
        state = StepState(
            raw_model=self.inner_model,
            epoch=self.epoch,
            step=self.step,
            epochs=cfg.train.epochs,
            generator=self.generator,
            steps_per_epoch=self.steps_per_epoch,
        )
        log_every, ck_every = cfg.train.log_every, cfg.train.checkpoint_every
        clip = cfg.optim.clip_grad_norm
        cl = cfg.train.channels_last
        params = [p for p in model.parameters() if p.requires_grad]
        autocast = (
            torch.autocast(self.device.type, dtype=self.amp_dtype)
            if self.amp_dtype is not None
            else contextlib.nullcontext()
        )
        window: dict[str, Tensor] = {}
        bar = tqdm(
            total=self.steps_per_epoch,
            initial=self.batch,
            desc=f"epoch {self.epoch + 1}/{cfg.train.epochs}",
            disable=not (self.main and cfg.train.progress and sys.stderr.isatty()),
            leave=False,
            dynamic_ncols=True,
        )
        opt, sched, scaler = self.optimizer, self.scheduler, self.scaler
        for x, y, idx in self._batches():
            self.last_index = idx
            if cl:
                x = x.contiguous(memory_format=torch.channels_last)
            state.step = self.step
            with autocast:
                loss, logs = self.objective(tm, x, y, idx, state)
            if scaler is not None:
                scaler.scale(loss).backward()
                if clip is not None:
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(params, clip)
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                if clip is not None:
                    torch.nn.utils.clip_grad_norm_(params, clip)
                opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
            if self.ema is not None:
                self.ema.update(model)
            self.step += 1
            self.batch += 1
            accumulate(window, loss, logs)
            bar.update(1)
            if log_every and self.step % log_every == 0:
                rec = reduce_means(window)
                merge(self.sums, window)
                window = {}
                check_finite(rec, self.step)
                rec = {"kind": "step", "epoch": self.epoch, "step": self.step, **rec}
                rec["lr"] = sched.get_last_lr()[0]
                self._log(rec)
                bar.set_postfix(loss=f"{rec['loss']:.4g}", refresh=False)
            if ck_every and self.step % ck_every == 0 and self.batch < self.steps_per_epoch:
                merge(self.sums, window)
                window = {}
                self._save_last()
        merge(self.sums, window)
        bar.close()

    def _end_epoch(self, seconds: float, images: int) -> dict[str, Any]:
        cfg = self.cfg
        rec: dict[str, Any] = {"kind": "epoch", "epoch": self.epoch, "step": self.step}
        train_stats = reduce_means(self.sums)
        check_finite(train_stats, self.step)
        rec.update({f"train_{k}": v for k, v in train_stats.items()})
        rec["lr"] = self.scheduler.get_last_lr()[0]
        rec["time_s"] = seconds
        rec["images_per_s"] = images / seconds if seconds > 0 else None
        delivered = self.ema.module if self.ema is not None else self.model
        val = cfg.validation
        last_epoch = self.epoch + 1 == cfg.train.epochs
        if self.data.val is not None and val.every and ((self.epoch + 1) % val.every == 0):
            metrics = validate(
                delivered,
                self.data.val,
                val,
                cfg.data.eval_batch_size,
                self.device,
                seed=cfg.seed + self.epoch,
                rank=self.dist.rank,
                world_size=self.dist.world_size,
                channels_last=cfg.train.channels_last,
            )
            rec.update(metrics)
            key = "val_robust_acc" if val.select == "robust" and val.attack else "val_clean_acc"
            if self.best is None or metrics[key] > self.best["value"]:
                self.best = {"epoch": self.epoch, "step": self.step, "metric": key}
                self.best["value"] = metrics[key]
                if self.main:
                    self._save_best(delivered)
        elif last_epoch and self.best is None and self.main:
            self._save_best(delivered)  # no validation: the final model is the best we have
        if self.main and self.callbacks:
            ctx = EpochContext(
                model=delivered.eval(),
                raw_model=self.model,
                data=self.data,
                epoch=self.epoch,
                step=self.step,
                run_dir=self.rundir.root,
                config=cfg,
                device=self.device,
                rank=self.dist.rank,
                objective=self.objective,
                ema_model=self.ema.module if self.ema is not None else None,
                batch_index=self.last_index,
            )
            for spec, cb in self.callbacks:
                if (self.epoch + 1) % spec.every == 0 or last_epoch:
                    cb.on_epoch_end(ctx)
            rec.update(ctx.metrics)
        barrier()
        self._log(rec)
        if self.main and cfg.train.progress and not sys.stderr.isatty():  # no bar: one line
            print(epoch_line(rec, cfg.train.epochs), flush=True)
        self.epoch += 1
        self.batch = 0
        self.sums = {}
        self._save_last()
        return rec

    def _finish(self, last: dict[str, Any], seconds: float, images: int) -> None:
        rd = self.rundir
        summary = run_summary(self, last, seconds, images)
        if self.ema is not None:
            export_weights(rd.root, "ema", self.ema.module, step=self.step)
            summary["checkpoints"]["ema_weights"] = rd.relative(rd.weights("ema"))
        write_json(rd.summary, summary)

    # ------------------------------------------------------------------------------ logging
    def _log(self, rec: dict[str, Any]) -> None:
        if not self.main:
            return
        append_jsonl(self.rundir.metrics, rec)
        if self.tb is not None:
            prefix = "step" if rec["kind"] == "step" else "epoch"
            for k, v in rec.items():
                if isinstance(v, (int, float)) and k not in ("kind", "step", "epoch"):
                    self.tb.add_scalar(f"{prefix}/{k}", v, rec["step"])

    # ------------------------------------------------------------------------------ checkpoints
    def _payload(self) -> dict[str, Any]:
        rank_state = {"rng": rng_state(), "generator": self.generator.get_state()}
        ranks = gather_objects(rank_state)
        return {
            "format": 1,
            "epoch": self.epoch,
            "batch": self.batch,
            "step": self.step,
            "world_size": self.dist.world_size,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            **{k: _state(obj) for k, obj in self._stateful()},
            "ranks": ranks,
            "sums": {k: v.detach().cpu() for k, v in self.sums.items()},
            "best": self.best,
        }

    def _stateful(self) -> list[tuple[str, Any]]:
        """Optional parts with their own state (None where absent or stateless)."""
        return [("scaler", self.scaler), ("ema", self.ema), ("objective", self.objective)]

    def _save_last(self) -> None:
        payload = self._payload()  # a collective under DDP: every rank builds it
        if self.main:
            save_checkpoint(self.rundir.checkpoint("last"), payload)
        barrier()

    def _save_best(self, delivered: nn.Module) -> None:
        save_checkpoint(
            self.rundir.checkpoint("best"),
            {
                "model": delivered.state_dict(),
                "epoch": self.epoch,
                "step": self.step,
                "best": self.best,
                "ema": self.ema is not None,
            },
        )
        export_weights(self.rundir.root, "best", delivered, epoch=self.epoch, step=self.step)

    def _restore(self, ck: dict[str, Any]) -> None:
        if int(ck.get("world_size", 1)) != self.dist.world_size:
            raise RobustlabError(
                f"{self.rundir} was trained with {ck.get('world_size')} processes; resume it "
                f"with the same number (got {self.dist.world_size})"
            )
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scheduler.load_state_dict(ck["scheduler"])
        for key, obj in self._stateful():
            if ck.get(key) is not None and hasattr(obj, "load_state_dict"):
                obj.load_state_dict(ck[key])
        mine = ck["ranks"][self.dist.rank]
        set_rng_state(mine["rng"])
        self.generator.set_state(mine["generator"])
        self.epoch, self.batch, self.step = int(ck["epoch"]), int(ck["batch"]), int(ck["step"])
        self.sums = {k: v.to(self.device) for k, v in ck.get("sums", {}).items()}
        self.best = ck.get("best")


def _state(obj: Any) -> Any:
    """``obj.state_dict()``, or None for an absent or stateless part."""
    return obj.state_dict() if hasattr(obj, "state_dict") else None
