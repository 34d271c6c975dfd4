"""One Hydra job, in named steps: claim the run dir → build the parts (data, model, loss, optimizer
and scheduler, from the composed and validated config) → fit (the loop, `sweep.train.fit`, with
the epoch's listeners) → finish (test the best weights, write best.pt, the run's `RunResult`). A
run that raises or diverges is a result, never a crashed sweep; a user error (missing data) is
raised for the entry point (the task function, `sweep.run.task`) to report."""

from __future__ import annotations

import dataclasses
import logging
import math
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from hydra.utils import instantiate, to_absolute_path
from omegaconf import DictConfig, OmegaConf
from torch import nn

from sweep import rules
from sweep.backbones import frozen_features, pretrained
from sweep.checkpoint import Checkpoint, write_checkpoint
from sweep.cost import measure as measure_cost
from sweep.data import Data
from sweep.device import ThreadsFollower, configure_cpu, pick_device, pick_precision, pick_threads
from sweep.errors import UserError
from sweep.files import claim
from sweep.loggers import Loggers
from sweep.losses import wants_log_probs
from sweep.models import ModelSpec, build, check_trainable
from sweep.outcomes import METRICS, Status
from sweep.progress import bars_wanted
from sweep.results import (
    CHECKPOINT_FILE,
    METRICS_FILE,
    RESULT_FILE,
    THREADS_FOLLOW,
    Evaluation,
    RunRecord,
    RunResult,
    epochs_written,
    make_record,
    write_metrics,
)
from sweep.scores import class_scores
from sweep.search.round_link import RoundLink
from sweep.search.trial_link import TrialLink, TrialRef, connect
from sweep.snapshot import LastSnapshot
from sweep.stops import describe
from sweep.train import Fit, Schedule, Settings, evaluate, fit, predict

log = logging.getLogger("sweep")
SCHEDULE_KEYS = ("interval", "monitor")  # how the loop steps a scheduler; not the scheduler's own arguments


def clear_stale(run_dir: Path, overrides: list[str]) -> RunResult | None:
    """A completed result of exactly these overrides, to reuse (a re-run grid resumes); otherwise
    whatever an earlier run left in `run_dir` is removed before this one starts (but a snapshot,
    which `sweep.snapshot` checks), so that no result is ever shown under another run's parameters."""
    previous = RunResult.read(run_dir, overrides)
    if previous.status is Status.COMPLETED:
        LastSnapshot(run_dir, overrides).remove()  # killed between writing its result and removing it
        return previous
    for name in (RESULT_FILE, METRICS_FILE, CHECKPOINT_FILE):  # the result first: no half-stale run
        (Path(run_dir) / name).unlink(missing_ok=True)
    return None


def run_job(
    cfg: DictConfig,
    run_dir: Path,
    overrides: list[str],
    parallel_jobs: int | None = 1,
    trial: TrialRef | None = None,
    loggers: Loggers | None = None,
    race: RoundLink | None = None,
) -> float:
    """Train one configuration into `run_dir`; return the objective at the early-stopped epoch
    (NaN when the run failed or diverged). `parallel_jobs` is how many runs share this machine;
    `trial` is the Optuna trial the run trains for, if any; `loggers` the trackers it also reports to;
    `race` the race's round that may stop it mid-way (`sweep.search.round_link`)."""
    device = pick_device(cfg.device)
    threads = pick_threads(cfg.threads, parallel_jobs)
    configure_cpu(threads)
    precision = pick_precision(cfg.precision, device)
    held = claim(run_dir)
    if held is None:  # two resumers of one grid: the run is the other's
        log.warning("skipped: %s is being trained by another process; that one will finish it", run_dir)
        return math.nan
    with held:  # until the run's files are written
        policy = THREADS_FOLLOW if cfg.threads == "auto" and device.type == "cpu" else "fixed"
        record = make_record(overrides, cfg.seed, cfg.objective, None, str(device), precision, threads, policy)
        return _run_claimed(cfg, run_dir, overrides, device, record, parallel_jobs, trial, loggers, race)


def _run_claimed(
    cfg: DictConfig,
    run_dir: Path,
    overrides: list[str],
    device: torch.device,
    record: RunRecord,
    parallel_jobs: int | None,
    trial: TrialRef | None,
    loggers: Loggers | None,
    race: RoundLink | None = None,
) -> float:
    """`run_job`, once this process holds the run dir: build, fit, finish, and write the result,
    whatever happened."""
    finished = clear_stale(run_dir, overrides)
    if finished is not None:
        log.info("skipped: %s finished before with the same overrides", run_dir)
        return finished.objective_value
    link = connect(trial) if trial is not None else None
    snapshots = LastSnapshot(run_dir, overrides)
    record = replace(record, trial=link and link.number)
    name = f"run {run_dir.name}" if parallel_jobs and parallel_jobs > 1 else ""  # lines of runs side by side
    # threads=auto on a CPU follows the cores other processes leave free, from now on
    follower = ThreadsFollower(torch.get_num_threads()) if record.threads_policy == THREADS_FOLLOW else None
    try:
        parts = build_parts(cfg, load_data(cfg), device)
        listeners = EpochListeners(run_dir, METRICS[record.objective].name, loggers, follower, link or race)
        fitted = fit(parts.trained, parts.train_data, parts.make_optimizer, parts.schedule, parts.loss_fn,
                     _settings(cfg, record.precision, name), listeners, snapshots)  # fmt: skip
        result = finish(run_dir, parts, fitted, record, follower, name)
    except UserError:  # every run of a sweep would fail alike: the entry point tells the user once
        raise
    except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM: the run is a row saying so, then the stop goes on
        result = RunResult.interrupted(record, epochs_written(run_dir), f"interrupted by {describe(stop)}")
        result.write(run_dir)
        if loggers is not None:
            loggers.end(result)
        raise
    except Exception as e:  # a run that raises is a row of the summary, not the end of the sweep
        result = RunResult.failed(record, f"{type(e).__name__}: {e}", traceback.format_exc())
        log.error("run failed: %s (the traceback is in result.json)", result.error)
    result.write(run_dir)
    if result.status is not Status.FAILED:  # it ended: best.pt and result.json say the rest
        snapshots.remove()
    if loggers is not None:
        loggers.end(result)
        if loggers.errors:  # the sweep says so when a tracker logged none of its runs
            replace(result, logger_errors=tuple(f"{k}: {v}" for k, v in loggers.errors.items())).write(run_dir)
    return result.objective_value


# ----------------------------------------------------------------------------- build the parts


@dataclass
class Parts:
    """What a run trains, built from the config: the whole model (what best.pt holds) on the data
    as it reads it, and what the loop trains on what (the head alone over cached features when
    the backbone is frozen)."""

    spec: ModelSpec
    model: nn.Module
    data: Data
    trained: nn.Module
    train_data: Data
    loss_fn: nn.Module
    log_probs: bool
    make_optimizer: Callable
    schedule: Schedule
    normalization: str  # "data", or the weights' (their source)


def _node(cfg: DictConfig) -> dict:
    """A config group's node as plain values, without the rules declared beside its keys."""
    return rules.strip(OmegaConf.to_container(cfg, resolve=True))


def load_data(cfg: DictConfig) -> Data:
    """The data set the config names, its subset drawn (an index into the decoded split, not a copy)."""
    data_cfg = _node(cfg.data)
    if cfg.split_per_seed and "split_seed" in data_cfg:  # repeats then also measure the split's noise
        data_cfg["split_seed"] = cfg.seed
    for key in ("root", "annotations_file", "img_dir"):  # relative to where the user ran the command
        if data_cfg.get(key):
            data_cfg[key] = to_absolute_path(data_cfg[key])
    subset = data_cfg.pop("subset", None)
    try:
        data = instantiate(data_cfg)
    except Exception as e:
        if isinstance(e.__cause__, UserError):  # instantiate wraps the loader's own errors
            raise e.__cause__ from None
        raise
    return data.subset(subset, data_cfg.get("split_seed", 0))


def _schedule(scheduler_cfg: DictConfig, steps_per_epoch: int) -> Schedule:
    """The scheduler config's factory and stepping; `steps_per_epoch: auto` gets the loop's batch count."""
    kwargs = _node(scheduler_cfg)
    how = {k: kwargs.pop(k) for k in SCHEDULE_KEYS if k in kwargs}
    if kwargs.get("steps_per_epoch") == "auto":
        kwargs["steps_per_epoch"] = steps_per_epoch
    return Schedule(instantiate(kwargs, _convert_="all"), **how)


def build_parts(cfg: DictConfig, data: Data, device: torch.device) -> Parts:
    """The model the config describes, for this data, on `device`, with its pretrained weights if it
    names any, and the data as it reads it (its channels, normalised as its weights were, or by
    the data's own statistics); checked before it takes memory. Then the loss, optimizer and
    scheduler. A frozen backbone's features are computed once for the sweep (`frozen_features`)."""
    torch.manual_seed(cfg.seed)
    loss_fn = instantiate(_node(cfg.loss))
    log_probs = wants_log_probs(loss_fn)
    node = _node(cfg.model)
    weights = pretrained(node.get("name"), node.pop("weights", None), node.pop("normalization", "auto"))
    cache_features = node.pop("cache_features", True)  # how to train, not what the model is
    spec = ModelSpec.of(instantiate(node, _convert_="all"))
    data = data.with_channels(getattr(spec.factory().func, "in_channels", None))
    data = data.prepare(device, weights.mean, weights.std) if weights and weights.mean else data.prepare(device)
    check_trainable(spec.factory(), data.shape, data.classes, log_probs)
    model = build(spec.factory(), data.shape, data.classes, log_probs)
    if weights is not None:
        (model[0] if log_probs else model).load_backbone(weights.state, weights.source)
    # channels-last convolutions: ~1.3x faster a step here (oneDNN's native layout; tensor cores' on GPUs)
    model = model.to(device, memory_format=torch.channels_last)
    core = model[0] if log_probs else model
    trained, train_data = model, data
    if getattr(core, "frozen", False) and cfg.augment == "none" and cache_features:
        train_data = frozen_features(core.backbone, data, spec.args.get("name", spec.kind))
        trained = nn.Sequential(core.head, nn.LogSoftmax(dim=1)) if log_probs else core.head
    return Parts(
        spec, model, data, trained, train_data, loss_fn, log_probs,
        make_optimizer=instantiate(_node(cfg.optimizer), _convert_="all"),
        schedule=_schedule(cfg.scheduler, math.ceil(len(data.x_train) / cfg.batch_size)),
        normalization="data" if weights is None else weights.normalization,
    )  # fmt: skip


def _settings(cfg: DictConfig, precision: str, name: str) -> Settings:
    return Settings(
        batch_size=cfg.batch_size,
        epochs=cfg.epochs,
        patience=cfg.patience,
        min_delta=cfg.min_delta,
        seed=cfg.seed,
        # `auto` draws no bar when runs side by side would draw theirs over each other
        progress=bars_wanted(cfg.progress) and (cfg.progress is True or not name),
        augment=cfg.augment,
        precision=precision,
        name=name,
    )


# ----------------------------------------------------------------------------- fit: the epoch's listeners


@dataclass
class EpochListeners:
    """What hears of each epoch the loop ends (its `on_epoch` hook): the run's metrics.csv, the
    experiment trackers, the thread follower, and the Optuna trial, which may stop the run."""

    run_dir: Path
    objective: str  # the metrics-row key the trial is told
    loggers: Loggers | None
    follower: ThreadsFollower | None
    trial: TrialLink | RoundLink | None  # what may stop the run mid-way: its trial's pruner, or its race's round

    def __post_init__(self) -> None:
        if self.follower is not None:
            self.follower.follow()  # the load while the data loaded: the first epoch's threads

    def __call__(self, history: list[dict], last: bool) -> bool:
        """Hear of the epoch `history[-1]` (`last`: the run ends with it anyway); True to prune."""
        write_metrics(self.run_dir, history)
        if self.loggers is not None:
            self.loggers.epoch(history[-1])
        if self.follower is not None and not last:
            self.follower.follow()
        row = history[-1]
        return self.trial is not None and self.trial.should_prune(row[self.objective], row["epoch"], last)


# ----------------------------------------------------------------------------- finish


def finish(run_dir: Path, parts: Parts, fitted: Fit, record: RunRecord, follower: ThreadsFollower | None,
           name: str = "") -> RunResult:  # fmt: skip
    """After the loop: metrics.csv as the fit ended it (a resumed run's, and an epoch that diverged
    before the hook), the test split scored once on the best weights with best.pt beside it, and
    the run's result."""
    write_metrics(run_dir, fitted.history)
    test, cost = Evaluation(), {}
    if fitted.best_epoch:
        data, trained = parts.data, parts.trained
        loss, acc = evaluate(trained, parts.train_data.x_test, parts.train_data.y_test, parts.loss_fn)
        predicted = predict(trained, parts.train_data.x_test)
        test = Evaluation(loss, acc, **class_scores(data.y_test.cpu().numpy(), predicted.cpu().numpy(), data.classes))
        state = {k: v.cpu() for k, v in parts.model.state_dict().items()}  # loads anywhere, GPU or not
        write_checkpoint(run_dir, Checkpoint(parts.spec, state, data.shape, data.classes, parts.log_probs, data.mean,
                                             data.std, data.class_names))  # fmt: skip
        cost = dataclasses.asdict(measure_cost(run_dir))
    log.info(
        "%s%s after %d epochs (%s): best epoch %d, val_loss %.4f, val_acc %.4f, test_acc %.4f",
        f"{name}: " if name else "", fitted.status, len(fitted.history), fitted.stop_reason, fitted.best_epoch,
        fitted.best_val_loss, fitted.best_val_acc, test.test_acc,
    )  # fmt: skip
    return RunResult.from_fit(
        record,
        fitted,
        test,
        class_names=tuple(parts.data.class_names),
        train_images=len(parts.data.x_train),
        normalization=parts.normalization,
        threads_used=tuple(follower.used[: len(fitted.history)]) if follower else None,
        **cost,
    )
