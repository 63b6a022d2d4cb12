"""The training loops shared by the codec trainers (``strata train image`` and ``strata train audio``: :func:`fit`)
and by the trainers of one network against a frozen model (``strata train encoder`` and ``decoder``: :func:`fit_part`).

::

    batch ─►─┤g_a├─►─┤RVQ, first k layers├─►─ synthesise ─►─ MSE against target(batch) + commitment loss
                      k uniform in 1..L per step (quantizer dropout); g_a and synthesise under bf16 autocast

Every step sets the LR (:func:`lr_at`: the cosine schedule times the warm-up of this process),
skips a non-finite loss (:class:`~strata.train.schedule.StepGuard`), clips the gradient norm to
``grad_clip`` and steps Adam. Every ``eval_every`` steps (and at the last) it validates, appends a
record to ``log.jsonl``, writes ``last.pt`` and, when the validation score is the best so far,
``best.pt``; then it stops if the run has been going for ``max_minutes``.

A run starts one of three ways: ``resume`` with a ``last.pt`` (weights, optimiser, step, best
score and both RNG states), ``init_from`` another checkpoint (its weights and step count; the
optimiser starts afresh), or new. Each writes ``config.json`` (a resume with its overrides). The
quantizer is initialised by k-means on latents of 8 batches unless the weights already hold codebooks.

What differs between the modalities (data, networks, the loss target, validation and the
console lines) comes in as an :class:`Objective` and the trainer's own functions
(:mod:`strata.train.image`, :mod:`strata.train.audio`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from strata.train.quantize.families import quantizer_loss
from strata.train.quantize.rvq import RVQConfig
from strata.train.schedule import StepGuard, cosine_lr, warmup_factor
from torch import nn


class Schedule(Protocol):
    """A config's learning-rate schedule (:func:`lr_at`)."""

    steps: int  # total optimiser steps of the schedule
    lr: float
    lr_min: float
    decay_start: float  # fraction of steps after which the LR follows a cosine to lr_min
    warmup: int  # steps of linear LR ramp-up at every start of the process


class LoopSettings(Schedule, Protocol):
    """The fields of a trainer's config that the loop reads (``ImageTrainConfig``, ``AudioTrainConfig``)."""

    grad_clip: float  # global gradient-norm clip (0: off)
    max_bad_steps: int  # consecutive non-finite losses before the run stops
    eval_every: int
    amp: bool  # bf16 autocast of the networks
    rvq: RVQConfig

    def to_dict(self) -> dict: ...


@dataclass(frozen=True)
class Objective:
    """The modality-specific parts of a run: what the loss compares, how it is validated and reported."""

    synthesise: Callable[[torch.Tensor], torch.Tensor]  # quantized latent → reconstruction (under autocast)
    target: Callable[[torch.Tensor], torch.Tensor]  # batch → what the reconstruction's MSE is taken against
    validate: Callable[[], dict]  # the validation record; its "score" selects best.pt
    higher_is_better: bool  # of the score
    metric: str  # the training metric of the running MSE, logged as train_<metric> ("psnr", "rmse")
    metric_of_mse: Callable[[float], float]
    bar_formats: tuple[str, str]  # progress-bar formats of the running loss and the metric (".5f", ".2f")
    describe: Callable[[dict], str]  # console summary of a validation record (the perplexities follow it)
    best_note: str  # how a resumed run states its best score, e.g. "best val score {:.3f} dB"


def lr_at(cfg: Schedule, step: int, since_start: int | None = None) -> float:
    """The LR at ``step``; with ``since_start``, including the warm-up of this process."""
    lr = cosine_lr(step, cfg.steps, cfg.lr, cfg.lr_min, cfg.decay_start)
    return lr if since_start is None else lr * warmup_factor(cfg.warmup, since_start)


def start(run_dir: Path, threads: int, seed: int) -> tuple[Path, torch.device]:
    """Create ``run_dir``, set torch's threads and seed; the run folder and the device to train on."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(seed)
    return run_dir, device


def save_checkpoint(path: Path, model: nn.Module, opt: torch.optim.Optimizer, step: int, best: float,
                    cfg: LoopSettings, rng_state: dict, extra: dict | None = None) -> None:
    """Write a resumable checkpoint atomically (through ``path.tmp``); ``extra`` adds a trainer's own keys."""
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "best": best,
                "config": cfg.to_dict(), "rng": rng_state, **(extra or {})}, tmp)
    tmp.replace(path)


def rng_state(rng: np.random.Generator) -> dict:
    """The numpy generator's and torch's RNG states, as :func:`save_checkpoint` stores them."""
    return {"numpy": rng.bit_generator.state, "torch": torch.get_rng_state()}


def fit(
    cfg: LoopSettings,
    run_dir: Path,
    model: nn.Module,
    batch: Callable[[], torch.Tensor],
    rng: np.random.Generator,
    objective: Objective,
    read_checkpoint: Callable[[Path, torch.device], dict],
    device: torch.device,
    resume: bool = False,
    max_minutes: float | None = None,
    init_from: Path | None = None,
    new_run: Callable[[], None] | None = None,
    stop_at: int | None = None,
) -> Path:
    """Train ``model`` (with ``g_a``, ``quantizer``, ``g_s``) in ``run_dir``; returns the path of ``best.pt``.

    ``batch()`` draws a training batch ``[B, …]`` on ``device``; ``rng`` is the generator it draws
    with (saved in checkpoints so that a resumed run sees the same batches). ``new_run`` prepares
    a model that starts from scratch (neither resumed nor initialised), before k-means.
    ``stop_at`` ends the process (validated, with a checkpoint) at that step of a longer schedule, so
    runs compared at equal steps share the learning-rate schedule of ``cfg.steps``.
    """
    from tqdm import tqdm

    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    step, best = 0, -math.inf if objective.higher_is_better else math.inf
    last = run_dir / "last.pt"
    if resume and last.exists():
        ckpt = read_checkpoint(last, device)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        step, best = ckpt["step"], ckpt["best"]
        rng.bit_generator.state = ckpt["rng"]["numpy"]
        torch.set_rng_state(ckpt["rng"]["torch"])
        print(f"resumed from {last} at step {step} ({objective.best_note.format(best)})", flush=True)
    else:
        if init_from is not None:
            ckpt = read_checkpoint(init_from, device)
            model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ckpt["model"].items()})
            step = int(ckpt.get("step") or 0)
            print(f"initialised from {init_from} (step {step})", flush=True)
        elif new_run is not None:
            new_run()
    (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))  # a resume's overrides included

    if not bool(model.quantizer.initialised):
        with torch.no_grad():
            lat = torch.cat([model.g_a(batch()) for _ in range(8)])
        if getattr(model.quantizer, "initialises_from_maps", False):
            model.quantizer.init_kmeans(lat.float())
        else:
            model.quantizer.init_kmeans(lat.permute(0, 2, 3, 1).reshape(-1, lat.shape[1]).float())

    L = model.quantizer.layers  # cfg.rvq.layers for RVQ; the trained family's layers in general
    first_step = step
    guard = StepGuard(cfg.max_bad_steps, f"restart from {run_dir / 'best.pt'} with --init-from and a lower --lr")
    better = (lambda a, b: a > b) if objective.higher_is_better else (lambda a, b: a < b)
    loss_fmt, metric_fmt = objective.bar_formats
    t0, started = time.time(), time.time()
    bar = tqdm(total=cfg.steps, initial=step, dynamic_ncols=True, mininterval=5)
    run_loss = run_mse = 0.0
    n_run = 0
    with (run_dir / "log.jsonl").open("a") as log:
        while step < cfg.steps:
            for g in opt.param_groups:
                g["lr"] = lr_at(cfg, step, step - first_step)
            x = batch()
            k = int(torch.randint(1, L + 1, ()).item())
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp):
                y = model.g_a(x)
            q = model.quantizer(y.float(), k)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp):
                xh = objective.synthesise(q.quantized)
            target = objective.target(x)
            mse = torch.mean((xh.float() - target) ** 2)
            loss = mse + quantizer_loss(q, mse, target.numel() / q.codes[0].numel())
            opt.zero_grad(set_to_none=True)
            if not guard.ok(loss, step, watch=mse):  # the reconstruction error: never negative
                continue
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            step += 1
            run_loss += loss.item()
            run_mse += mse.item()
            n_run += 1
            bar.update(1)
            if step % 50 == 0:
                bar.set_postfix(**{"loss": f"{run_loss / n_run:{loss_fmt}}",
                                   objective.metric: f"{objective.metric_of_mse(run_mse / n_run):{metric_fmt}}"})
            if step % cfg.eval_every == 0 or step == cfg.steps or step == stop_at:
                v = objective.validate()
                dt = time.time() - t0
                rec = {"step": step, "time": time.time(), "steps_per_s": n_run / dt,
                       "lr": lr_at(cfg, step, step - first_step), "train_loss": run_loss / n_run,
                       f"train_{objective.metric}": objective.metric_of_mse(run_mse / n_run),
                       "skipped_steps": guard.skipped, **v}
                log.write(json.dumps(rec) + "\n")
                log.flush()
                skipped = f" ({guard.skipped} steps skipped by the guard)" if guard.skipped else ""
                bar.write(f"step {step}: {rec['steps_per_s']:.2f} it/s {objective.describe(v)} "
                          f"ppl {min(v['perplexity']):.0f}-{max(v['perplexity']):.0f}{skipped}")
                rngs = rng_state(rng)
                if better(v["score"], best):
                    best = v["score"]
                    save_checkpoint(run_dir / "best.pt", model, opt, step, best, cfg, rngs)
                save_checkpoint(last, model, opt, step, best, cfg, rngs)
                run_loss = run_mse = 0.0
                n_run = 0
                t0 = time.time()
                if max_minutes is not None and time.time() - started > 60 * max_minutes:
                    bar.write(f"stopping after {max_minutes} minutes at step {step}; resume with --resume")
                    break
                if stop_at is not None and step >= stop_at:
                    bar.write(f"stopping at step {step} (--stop-at); resume with --resume")
                    break
    bar.close()
    return run_dir / "best.pt"


class PartSettings(Schedule, Protocol):
    """The fields of a part trainer's config that :func:`fit_part` reads (``EncoderTrainConfig``,
    ``DecoderTrainConfig``)."""

    grad_clip: float
    max_bad_steps: int
    eval_every: int


@dataclass(frozen=True)
class PartRun:
    """What a part trainer gives :func:`fit_part`: the step's loss, the running metric, validation, saving."""

    loss: Callable[[], torch.Tensor]  # draws a batch and returns the loss of the trained part on it
    metric: str  # the running training metric's name in log.jsonl and on the progress bar
    metric_of_loss: Callable[[float], float]  # mean loss → that metric
    metric_format: str  # its format on the bar, e.g. ".5f"
    evaluate: Callable[[float], tuple[float, dict, str]]  # running metric → (score, log fields, console line)
    save: Callable[[Path, int, float], None]  # (path, step, best score) → a resumable checkpoint


def restore(path: Path, model: nn.Module, opt: torch.optim.Optimizer, rng: np.random.Generator,
            read: Callable[[Path], dict]) -> dict:
    """Resume from the checkpoint ``path`` (read by ``read``): the weights, the optimiser and both RNG states
    are restored in place; returns the checkpoint (``step``, ``best`` and the trainer's own keys)."""
    ckpt = read(path)
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["opt"])
    rng.bit_generator.state = ckpt["rng"]["numpy"]
    torch.set_rng_state(ckpt["rng"]["torch"])
    print(f"resumed from {path} at step {ckpt['step']} (best val score {ckpt['best']:.3f} dB)", flush=True)
    return ckpt


def fit_part(cfg: PartSettings, run_dir: Path, params: list[nn.Parameter], opt: torch.optim.Optimizer, step: int,
             best: float, run: PartRun, max_minutes: float | None = None) -> None:
    """The step loop of one network trained against a frozen model (``strata train encoder`` / ``decoder``).

    From ``step`` to ``cfg.steps``: the LR of :func:`lr_at` (its warm-up counted from this process's first
    step), a non-finite loss skipped by :class:`~strata.train.schedule.StepGuard`, the gradient norm of
    ``params`` clipped to ``cfg.grad_clip``. Every ``eval_every`` steps and at the last: validation, a record
    in ``log.jsonl``, ``best.pt`` when the score (higher is better) beats ``best``, ``last.pt``; then a stop
    once the process has run ``max_minutes``.
    """
    from tqdm import tqdm

    last = run_dir / "last.pt"
    first, started, t0 = step, time.time(), time.time()
    guard = StepGuard(cfg.max_bad_steps, f"resume from {last} with a lower --lr")
    run_loss, n_run = 0.0, 0
    bar = tqdm(total=cfg.steps, initial=step, dynamic_ncols=True, mininterval=5)
    with (run_dir / "log.jsonl").open("a") as log:
        while step < cfg.steps:
            lr = lr_at(cfg, step, step - first)
            for g in opt.param_groups:
                g["lr"] = lr
            loss = run.loss()
            opt.zero_grad(set_to_none=True)
            if not guard.ok(loss, step):
                continue
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            step += 1
            run_loss += loss.item()
            n_run += 1
            bar.update(1)
            if step % 50 == 0:
                bar.set_postfix(**{run.metric: f"{run.metric_of_loss(run_loss / n_run):{run.metric_format}}"})
            if step % cfg.eval_every == 0 or step == cfg.steps:
                running = run.metric_of_loss(run_loss / n_run)
                score, fields, line = run.evaluate(running)
                rec = {"step": step, "time": time.time(), "steps_per_s": n_run / (time.time() - t0), "lr": lr,
                       run.metric: running, **fields}
                log.write(json.dumps(rec) + "\n")
                log.flush()
                bar.write(f"step {step}: {line}{' *' if score > best else ''}")
                if score > best:
                    best = score
                    run.save(run_dir / "best.pt", step, best)
                run.save(last, step, best)
                run_loss, n_run, t0 = 0.0, 0, time.time()
                if max_minutes is not None and time.time() - started > 60 * max_minutes:
                    bar.write(f"stopping after {max_minutes} minutes at step {step}; resume with --resume")
                    break
    bar.close()


__all__ = ["LoopSettings", "Objective", "PartRun", "PartSettings", "Schedule", "fit", "fit_part", "lr_at", "restore",
           "rng_state", "save_checkpoint", "start"]
