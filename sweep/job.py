"""One Hydra job: build data, model, optimizer and scheduler from the composed config, train,
and write the run's results. A run that raises or diverges is a result, never a crashed sweep."""

from __future__ import annotations

import logging
import math
import os
import platform
import subprocess
import sys
import traceback
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate, to_absolute_path
from omegaconf import DictConfig, OmegaConf

from sweep import results, trial_link
from sweep.data import DataNotFound
from sweep.losses import wants_log_probs
from sweep.train import Settings, evaluate, fit
from sweep.validate import ConfigError, user_error, validate

log = logging.getLogger("sweep")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name}: CUDA is not available on this machine; use auto or cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device={name}: MPS is not available on this machine; use auto or cpu")
    return torch.device(name)


def pick_threads(threads: int | str, parallel: int | None) -> int:
    """`auto` shares the cores between the jobs a launcher runs at once, so they don't oversubscribe."""
    if threads != "auto":
        return int(threads)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    parallel = cores if parallel is None or parallel < 1 else parallel
    return max(1, cores // parallel)


def configure_cpu(threads: int) -> None:
    """Torch's CPU thread count, and denormal floats flushed to zero: near-zero gradients late in
    training are otherwise denormals, which x86 CPUs compute many times slower (10-15% an epoch here)."""
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)


def provenance() -> dict[str, Any]:
    """Library versions and, inside a git checkout, the commit and whether the tree was dirty."""
    versions = {"python": platform.python_version()}
    for pkg in ("torch", "torchvision", "hydra-core", "optuna", "numpy"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = None
    repo = Path(__file__).resolve().parent.parent
    git: dict[str, Any] = {}
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=5)
        if commit.returncode == 0:
            dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=5)
            git = {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.TimeoutExpired):
        pass
    return {"versions": versions, "git": git or None}


def run(cfg: DictConfig, run_dir: Path, overrides: list[str], parallel_jobs: int | None = 1) -> float:
    """Train one configuration into `run_dir`; return the objective at the early-stopped epoch
    (NaN when the run failed or diverged). `parallel_jobs` is how many runs share this machine."""
    try:
        validate(cfg)
        device = pick_device(cfg.device)
    except ConfigError as e:
        user_error(str(e))
    threads = pick_threads(cfg.threads, parallel_jobs)
    configure_cpu(threads)
    record: dict[str, Any] = {
        "params": results.overrides_dict(overrides),
        "overrides": overrides, "seed": cfg.seed, "device": str(device), "threads": threads,
        "objective": cfg.objective,
        **provenance(),
    }

    trial = trial_link.current()
    if trial is not None:
        record["trial"] = trial.number
    try:
        outcome = _train(cfg, _load_data(cfg.data), device, run_dir, trial)
    except DataNotFound as e:  # every run of a sweep would fail alike: tell the user once
        user_error(str(e))
    except Exception as e:  # a run that raises is a row of the summary, not the end of the sweep
        error = " ".join(f"{type(e).__name__}: {e}".split())  # one line: Hydra's messages span several
        log.error("run failed: %s (the traceback is in result.json)", error)
        outcome = {"status": "failed", "stop_reason": "failed", "error": error,
                   "traceback": traceback.format_exc()}
    results.write_result(run_dir, {**{c: None for c in results.OUTCOME_COLUMNS}, **outcome, **record})
    if outcome["status"] not in ("completed", "pruned"):
        return math.nan
    return outcome[f"best_{cfg.objective}"]


def _load_data(data_cfg: DictConfig):
    data_cfg = OmegaConf.to_container(data_cfg, resolve=True)
    if "root" in data_cfg:  # relative to where the user ran the command, whatever the launcher's cwd
        data_cfg["root"] = to_absolute_path(data_cfg["root"])
    try:
        return instantiate(data_cfg)
    except Exception as e:
        if isinstance(e.__cause__, DataNotFound):  # instantiate wraps the loader's own errors
            raise e.__cause__ from None
        raise


def _train(cfg: DictConfig, data, device: torch.device, run_dir: Path, trial) -> dict[str, Any]:
    torch.manual_seed(cfg.seed)
    data = data.prepare(device)
    loss_fn = instantiate(cfg.loss)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    build = {"in_shape": list(data.shape), "classes": data.classes, "log_softmax": wants_log_probs(loss_fn)}
    model = instantiate(model_cfg)(**build).to(device)
    settings = Settings(batch_size=cfg.batch_size, epochs=cfg.epochs, patience=cfg.patience,
                        min_delta=cfg.min_delta, seed=cfg.seed,
                        progress=sys.stderr.isatty() if cfg.progress == "auto" else bool(cfg.progress))

    history: list[dict] = []

    def on_epoch(row: dict) -> bool:
        history.append(row)
        results.write_metrics(run_dir, history)
        return trial is not None and trial.should_prune(row[cfg.objective], row["epoch"])

    result = fit(model, data, instantiate(cfg.optimizer, _convert_="all"),
                 instantiate(cfg.scheduler, _convert_="all"), loss_fn, settings, on_epoch)
    if len(result.history) > len(history):  # the last epoch diverged before reaching the hook
        results.write_metrics(run_dir, result.history)

    test_loss = test_acc = math.nan
    if result.best_epoch:
        test_loss, test_acc = evaluate(model, data.x_test, data.y_test, loss_fn)
        results.write_checkpoint(run_dir, model.state_dict(), model_cfg, build,
                                 {"mean": list(data.mean), "std": list(data.std)})
    log.info("%s after %d epochs (%s): best epoch %d, val_loss %.4f, val_acc %.4f, test_acc %.4f",
             result.status, len(result.history), result.stop_reason, result.best_epoch,
             result.best_val_loss, result.best_val_acc, test_acc)
    return {"status": result.status, "stop_reason": result.stop_reason, "epochs_run": len(result.history),
            "best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss,
            "best_val_acc": result.best_val_acc, "test_loss": test_loss, "test_acc": test_acc,
            "train_time_s": round(result.train_time_s, 3)}

