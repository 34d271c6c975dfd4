"""The Optuna search behind `search=optuna`: ask trials in batches, launch their jobs through
Hydra's launcher with a link to the trial, and tell each trial what its runs' result.json files
say (COMPLETE with the mean objective over seeds, PRUNED, or FAIL with the reason). With
`race=true` a trial's seeds run one at a time, under `sweep.search.race.behind_best`."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from optuna.trial import FrozenTrial, TrialState

from sweep import progress
from sweep.errors import UserError
from sweep.files import LOCK_FILE, atomic_write, claim
from sweep.outcomes import METRICS, Status, objectives, returned
from sweep.results import RunResult
from sweep.search import borrowed, settings
from sweep.search.folders import CONFIRM_FOLDER, seed_dirs, trial_dir, trial_number
from sweep.search.returns import record_return
from sweep.search.study import DEFAULT_STUDY, StudyRef, storage_kind, storage_url
from sweep.search.trial_link import OWN_TASK, REPORT_ENV, TRIAL_ENV
from sweep.stops import describe
from sweep.text import redacted
from sweep.trust import PRUNER_TARGETS, SAMPLER_TARGETS

log = logging.getLogger("sweep")
RESULTS_FILE = "optimization_results.yaml"
STALE = "its process stopped sending heartbeats (killed, or its machine went down)"


class TrialSearch:
    """The search's state and steps. hydra-optuna-sweeper's config and override grammar are kept
    (its parsing is called through `borrowed`, not inherited); the steps of `sweep` are named."""

    def __init__(
        self,
        sampler: Any,
        direction: Any,
        storage: str | None,
        study_name: str | None,
        n_trials: int,
        n_jobs: int | None,
        max_failure_rate: float,
        custom_search_space: str | None,
        params: DictConfig | None,
        pruner: Any,
        repeats: int,
        heartbeat_interval: int,
        race: bool,
        min_seeds: int,
        alpha: float,
        seed_key: str,
        confirm: int = settings.CONFIRM,
        confirm_budget: float = settings.CONFIRM_BUDGET,
        stop: str = settings.STOP,
    ) -> None:
        settings.check(
            {"repeats": repeats, "max_failure_rate": max_failure_rate, "n_trials": n_trials, "n_jobs": n_jobs,
             "heartbeat_interval": heartbeat_interval, "direction": direction, "storage": storage, "race": race,
             "min_seeds": min_seeds, "alpha": alpha, "confirm": confirm, "confirm_budget": confirm_budget,
             "stop": stop},
            EXTRA_RULES,
        )  # fmt: skip
        self.confirm, self.confirm_budget, self.stop = confirm, confirm_budget, stop
        self.sampler_cfg, self.direction, self.storage, self.study_name = sampler, direction, storage, study_name
        self.n_trials, self.n_jobs = n_trials, n_jobs or (os.cpu_count() or 1)
        self.max_failure_rate, self.params = max_failure_rate, params
        self.repeats, self.heartbeat_interval = repeats, heartbeat_interval
        self.race, self.min_seeds, self.alpha, self.seed_key = race, min_seeds, float(alpha), seed_key
        self.pruner = pruner
        self.ours = True  # this project's task, which writes result.json; setup says
        self.batch_defaults: list[str] = []  # Optuna 5's defaults for batched asks, set when n_jobs > 1
        # a function (config, trial) that samples more, as hydra-optuna-sweeper's custom_search_space
        self.extend = _extender(custom_search_space) if custom_search_space else None
        if pruner is not None:  # each job builds the pruner again; a bad config should stop us here, once
            try:
                instantiate(pruner, _execution_whitelist_=PRUNER_TARGETS)
            except Exception as e:  # noqa: BLE001 - Hydra wraps the pruner's own error
                raise UserError(f"hydra.sweeper.pruner: {e}") from None

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )
        self.ours = bool(getattr(task_function, OWN_TASK, False))
        if not self.ours:
            _end_with_a_summary(hydra_context, config)
        self.direction = self._checked_direction()
        prunes = self.pruner is not None and self.pruner.get("_target_") != "optuna.pruners.NopPruner"
        if prunes and len(self.directions) > 1:
            raise UserError(
                f"hydra.sweeper.pruner: Optuna cannot prune a study with several objectives (direction="
                f"[{', '.join(self.directions)}]); choose search/pruner=none or one objective"
            )

    def _checked_direction(self) -> Any:
        """The study's direction(s): for this project's task, its objective's (one line when they
        contradict each other); for another app's, as given, `auto` being the peer's `minimize`."""
        if not self.ours:
            return "minimize" if self.direction == "auto" else self.direction
        metrics = [METRICS[name] for name in settings.task_objectives(self.config)]
        if len(metrics) > 1:  # each objective's own direction: a multi-objective study
            wanted = [m.direction for m in metrics]
            if self.direction == "auto" or list(self.directions) == wanted:
                return wanted
            raise UserError(
                f"hydra.sweeper.direction={_said(self.direction)}: objective=[{', '.join(m.name for m in metrics)}] "
                f"is [{', '.join(wanted)}]; leave direction at auto"
            )
        metric = metrics[0]
        if self.direction == "auto" or self.direction == metric.direction:
            return metric.direction
        raise UserError(
            f"hydra.sweeper.direction={_said(self.direction)}: objective={metric.name} is "
            f"{metric.direction}d; leave direction at auto (or give {metric.direction}), or choose the objective "
            f"{'val_loss' if metric.higher_is_better else 'val_acc'}"
        )

    @property
    def objective(self) -> str:
        """The name each run's result.json gives its objective (`val_acc`, or another app's `value`)."""
        return objectives(self.config.objective)[0] if self.ours else returned(self.directions[0])

    def _values(self, result: RunResult) -> list[float]:
        """A run's value of each objective: this project's from its metrics, another app's as returned."""
        if not self.ours:
            return list(result.values or [])
        return [result.metric(METRICS[name].column) for name in objectives(self.config.objective)]

    @property
    def directions(self) -> list[str]:
        return list(self.direction) if isinstance(self.direction, (list, ListConfig)) else [self.direction]

    # ------------------------------------------------------------------ the steps

    def sweep(self, arguments: list[str]) -> None:
        """Open the study, read the search space, then ask, launch and tell batches of trials
        until `n_trials` have finished; write optimization_results.yaml however it ends."""
        sweep_dir = Path(self.config.hydra.sweep.dir).absolute()
        study, storage = self._open_study(sweep_dir)
        space = self._search_space(arguments)
        study.sampler, n_trials = self._sampler(space.distributions, len(study.trials), _has_running(study))
        log.info(
            "Study %s in %s: %d trials already, %d to add; sampler %s%s, direction %s",
            study.study_name,
            redacted(storage_url(self.storage, sweep_dir)),
            len(study.trials),
            n_trials,
            type(study.sampler).__name__,
            f" ({', '.join(self.batch_defaults)})" if self.batch_defaults else "",
            self.direction,
        )
        in_process = type(self.launcher).__name__ == "BasicLauncher"  # joblib's workers share the console
        bar = progress.trials_bar(n_trials, in_process and progress.bars_wanted(self.config.get("progress")))
        count = _Count(n_trials)
        self.confirmed, self.stopped = None, None
        if (before := _stopped_before(study)) is not None:  # its numbers, worded here: never the study's text
            log.info("This study stopped after %d trials before: %s%s", before.trials, self._why(before),
                     "; with stop=auto it stops again at once while that holds (hydra.sweeper.stop=off searches on)"
                     if self.stop == "auto" else "")  # fmt: skip
        try:
            while count.finished < n_trials:
                if (stop := self._should_stop(study, space)) is not None:
                    self._stopped(study, stop)
                    break
                trials = self._ask(study, min(self.n_jobs, n_trials - count.finished), space)
                run_dirs, stopped = self._launch(study, storage, trials, space, sweep_dir)
                outcomes = [self._tell(study, t, run_dirs[t.number], sweep_dir, stopped.get(t.number)) for t in trials]
                count.add(outcomes)
                self._say(study, trials, count, bar)
                if count.failed / count.finished > self.max_failure_rate:
                    raise UserError(
                        f"{count.failed} of {count.finished} trials failed or diverged, more than "
                        f"hydra.sweeper.max_failure_rate={self.max_failure_rate} allows (the last: {count.last}); "
                        f"see {sweep_dir}"
                    )
            self._confirm(study, space, sweep_dir)
        finally:
            if bar is not None:
                bar.close()
            self._write_results(study, sweep_dir)  # Hydra still runs the end-of-sweep summary

    def _open_study(self, sweep_dir: Path) -> tuple[optuna.Study, Any]:
        """The study (created, or loaded to resume or to join other workers), with trials a killed
        sweeper left RUNNING settled: COMPLETE when their runs completed, else FAIL."""
        sweep_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(sweep_dir / "multirun.yaml", OmegaConf.to_yaml(self.config))  # as Hydra's basic sweeper does
        ref = StudyRef(self.storage, self.study_name or DEFAULT_STUDY)
        try:
            storage = ref.open(sweep_dir, self.heartbeat_interval)
            study = ref.create(storage, self.directions)
        except Exception as e:  # noqa: BLE001 - SQLAlchemy, psycopg and the file system say it many ways
            why = " ".join(f"{type(e).__name__}: {e}".split())[:300]
            raise UserError(f"hydra.sweeper.storage={ref.url(sweep_dir)}: cannot be opened ({why})") from None
        ref.write(sweep_dir)
        if len(self.directions) == 1:
            _reconcile_finished(study, sweep_dir, METRICS[self.objective].column, self.repeats)
        _fail_stale_trials(study)
        return study, storage

    def _search_space(self, arguments: list[str]) -> _Space:
        """The sweeper's `params` and the command line's searched keys, as Optuna distributions;
        a key given one value on the command line is fixed, not searched."""
        swept = [f"{k!s}={v}" for k, v in (self.params or {}).items()]
        try:
            distributions, fixed, deletions = borrowed.search_space(swept + arguments)
        except ValueError as e:  # interval(1, 0) and the like, in Optuna's words
            raise UserError(f"search space: {' '.join(str(e).split())}") from None
        for name in fixed:
            distributions.pop(name, None)
        first = fixed.pop(self.seed_key, OmegaConf.select(self.config, self.seed_key, default=0))
        try:
            first = int(first)
        except (TypeError, ValueError):
            first = 0  # not a number: only a repeat's override would set it, and none is asked for
        return _Space(distributions, fixed, deletions, first if self.repeats > 1 else None, first)

    def _ask(self, study: optuna.Study, n: int, space: _Space) -> list[optuna.Trial]:
        """`n` new trials, each with its sampled values and (as user attributes) the fixed ones."""
        _fail_stale_trials(study)
        with warnings.catch_warnings():  # we record the heartbeats that study.optimize would
            warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
            trials = [study.ask() for _ in range(n)]
        for trial in trials:
            for name, distribution in space.distributions.items():
                borrowed.suggest(trial, name, distribution)
            for name, value in space.fixed.items():
                trial.set_user_attr(name, value)
            if self.extend is not None:
                self.extend(self.config, trial)
        return trials

    def _launch(
        self, study: optuna.Study, storage: Any, trials: list[optuna.Trial], space: _Space, sweep_dir: Path
    ) -> tuple[dict[int, list[Path]], dict[int, str]]:
        """Run the trials' jobs (one a seed with repeats) through Hydra's launcher, with their
        heartbeats: as one batch, or with `race` a seed at a time, a trial dropping out once it is
        significantly behind the best completed trial. Return each trial's run dirs, and why each
        trial that raced out did. A stop fails the batch's trials at once."""
        run_dirs: dict[int, list[Path]] = {t.number: [] for t in trials}
        asked = study.get_trials(deepcopy=False)  # once a batch: each get_trials is a storage read
        seeds = {t.number: self._seeds(asked, t, space) for t in trials}
        rounds = [slice(i, i + 1) for i in range(self.repeats)] if self.race else [slice(None)]
        racing, stopped, values = list(trials), {}, {}
        incumbent = _incumbent(study, self.directions) if self.race else None
        try:
            with _Heartbeat(storage, [borrowed.trial_id(t) for t in trials]):
                for i, batch in enumerate(rounds):
                    jobs = []
                    for trial in racing:
                        for seed in seeds[trial.number][batch]:
                            subdir = trial_dir(trial.number, seed)
                            jobs.append(self._job(trial, space, seed, subdir, seed == seeds[trial.number][0]))
                            run_dirs[trial.number].append(sweep_dir / subdir)
                    self._run(jobs, trials[0].number * self.repeats + i * len(trials), sweep_dir)
                    if self.race:
                        racing = self._race(racing, run_dirs, values, incumbent, stopped)
        except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM: no trial is left RUNNING for a later start
            for trial in trials:
                if borrowed.stored_trial(study, borrowed.trial_id(trial)).state == TrialState.RUNNING:
                    trial.set_user_attr("fail_reason", f"interrupted by {describe(stop)}")
                    _tell(study, trial, state=TrialState.FAIL)
            raise
        return run_dirs, stopped

    def _run(self, jobs: list[tuple[str, ...]], first_index: int, sweep_dir: Path) -> None:
        """Launch jobs through Hydra's launcher; another app's task returns its value, and its run
        dir gets a result.json from it."""
        returns = self.launcher.launch(jobs, initial_job_idx=first_index)
        if not self.ours:
            for job, ret in zip(jobs, returns):
                run_dir = sweep_dir / _subdir(job)
                seed = _seed(job, self.seed_key)
                record_return(run_dir, ret, list(job), self.directions, seed, trial_number(run_dir))

    def _should_stop(self, study: optuna.Study, space: _Space) -> Any:
        """With stop=auto, a `stopping.Stop` once a further trial is unlikely to gain more than the
        best setting's seed noise; None to go on. A best setting that ran one seed is asked again
        first (as the next trial), which trains its next seed."""
        if self.stop != "auto" or len(self.directions) > 1 or not self.seeded:
            return None
        from sweep.search import stopping

        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len(complete) < stopping.MIN_TRIALS:
            return None
        settings_run: dict[str, list[float]] = {}
        first: dict[str, FrozenTrial] = {}
        for t in complete:
            key = repr(sorted(_setting(t.params, t.user_attrs, space.fixed).items()))
            values = t.user_attrs.get("seed_values")
            settings_run.setdefault(key, []).extend(values if isinstance(values, list) else [t.value])
            first.setdefault(key, t)
        maximize = self.directions[0] == "maximize"
        probe = stopping.best_needing_a_seed(settings_run, maximize)
        if probe is not None:
            if not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                study.enqueue_trial(first[probe].params, user_attrs={"stop_probe": True})
            return None
        return stopping.should_stop(complete, settings_run, maximize)

    def _why(self, stop: Any) -> str:
        """Why a search stopped, in the objective's units."""
        name = METRICS[self.objective].name
        scale, unit = (100, " points") if name.endswith("_acc") else (1, "")
        return (f"a further trial is unlikely to gain more than {scale * stop.bound:.3g}{unit} of {name} "
                f"(seed noise of the best: {scale * stop.noise:.3g}{unit})")  # fmt: skip

    def _stopped(self, study: optuna.Study, stop: Any) -> None:
        """Say why the search stopped and keep it with the study (and for optimization_results.yaml)."""
        why = self._why(stop)
        self.stopped = {"trials": stop.trials, "bound": stop.bound, "noise": stop.noise, "why": why}
        study.set_user_attr("stopped", self.stopped)
        log.info("Stopped after %d trials: %s", stop.trials, why)

    def _confirm(self, study: optuna.Study, space: _Space, sweep_dir: Path) -> None:
        """The search's end: its leading settings race over seeds (`sweep.search.confirmation`)."""
        if not self.confirm or len(self.directions) > 1 or not self.seeded:
            return
        from sweep.search import confirm, confirmation

        column, higher = METRICS[self.objective].column, self.directions[0] == "maximize"
        complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        found = confirmation.settings_run(complete, sweep_dir, column, self.seed_key, space.first)
        budget = confirm.budget_runs(self.confirm_budget, sum(len(s.runs) for s in found), 1)
        jobs_before = len(study.trials) * self.repeats

        def run(missing: list) -> None:
            jobs = [(*s.overrides, f"hydra.sweep.subdir={folder}", f"{self._seed_key()}={seed}")
                    for s, seed, folder in missing]  # fmt: skip
            self._run(jobs, jobs_before, sweep_dir)

        held = claim(sweep_dir / CONFIRM_FOLDER)  # workers sharing the study: one confirms, the others leave it
        if held is None:
            log.info("Not confirmed here: another process is confirming this study's winner (it holds %s)",
                     sweep_dir / CONFIRM_FOLDER / LOCK_FILE)  # fmt: skip
            return
        with held:
            record = confirmation.confirm_winner(found, self.confirm, budget, space.first, self.min_seeds,
                                                 self.alpha, higher, run, sweep_dir, column, self.seed_key)  # fmt: skip
        self.confirmed = record
        if record is None:
            log.info("Not confirmed: fewer than 2 settings completed, or hydra.sweeper.confirm_budget=%s allows "
                     "fewer than 2 seeds each", self.confirm_budget)  # fmt: skip
            return
        v = confirm.verdict(record.race)
        log.info("Confirmation: %s", _verdict_line(v, record, METRICS[self.objective].name))

    def _seeds(self, asked: list[FrozenTrial], trial: optuna.Trial, space: _Space) -> list[int | None]:
        """The seeds a trial's runs train: with repeats, `repeats` of them from the first seed; a
        setting asked again trains the next ones (so that a second ask adds evidence, not the same
        run again), when the app's config has a seed key. None: the config's own seed, unnamed."""
        mine = _setting(trial.params, trial.user_attrs, space.fixed)
        again = sum(t.number < trial.number and _setting(t.params, t.user_attrs, space.fixed) == mine
                    for t in asked)  # fmt: skip
        if self.repeats == 1 and (again == 0 or not self.seeded):
            return [None]
        first = space.first + again * self.repeats if self.seeded else (space.seed or 0)
        return list(range(first, first + self.repeats))

    @property
    def seeded(self) -> bool:
        """Whether runs can be given other seeds: this project's task, or an app whose config has the key."""
        return self.ours or OmegaConf.select(self.config, self.seed_key) is not None

    def _job(self, trial: optuna.Trial, space: _Space, seed: int | None, subdir: str, first: bool = True
             ) -> tuple[str, ...]:  # fmt: skip
        """One run's overrides: the trial's values, its folder, its link to the trial, its seed
        (intermediate values are reported from its first seed's run alone)."""
        return (
            tuple(f"{name}={value}" for name, value in {**trial.params, **space.fixed}.items())
            + tuple(space.deletions)
            + (f"hydra.sweep.subdir={subdir}", f"+hydra.job.env_set.{TRIAL_ENV}={borrowed.trial_id(trial)}")
            + (() if seed is None else (f"{self._seed_key()}={seed}",))
            + (() if first else (f"+hydra.job.env_set.{REPORT_ENV}=0",))
        )

    def _seed_key(self) -> str:
        """The seed's override: `seed=`, or `+seed=` for an app whose config has no such key."""
        return self.seed_key if OmegaConf.select(self.config, self.seed_key) is not None else f"+{self.seed_key}"

    def _race(
        self, racing: list[optuna.Trial], run_dirs: dict[int, list[Path]], values: dict[int, list[float]],
        incumbent: tuple | None, stopped: dict,
    ) -> list[optuna.Trial]:  # fmt: skip
        """The trials that go on to their next seed: those whose newest run completed (its value
        joins `values`) and that are not significantly behind the incumbent (the best completed
        trial) on the seeds both ran."""
        from sweep.search import race  # scipy, for a racing search only

        column = METRICS[self.objective].column
        higher = self.directions[0] == "maximize"
        going = []
        for trial in racing:
            newest = RunResult.read(run_dirs[trial.number][-1])
            if newest.status is not Status.COMPLETED:  # failed or pruned: _tell says which
                continue
            mine = values.setdefault(trial.number, [])
            mine.append(newest.metric(column))
            why = race.behind_best(incumbent, mine, higher, self.min_seeds, self.repeats, self.alpha)
            if why is None:
                going.append(trial)
            else:
                stopped[trial.number] = why
        return going

    def _say(self, study: optuna.Study, trials: list[optuna.Trial], count: _Count, bar: Any) -> None:
        """A progress line for each trial of the batch that just ended."""
        left = progress.eta(count.started, count.finished, count.total - count.finished)
        for i, trial in enumerate(trials, start=count.finished - len(trials) + 1):
            names = objectives(self.config.objective) if self.ours else [METRICS[self.objective].name]
            line = _trial_line(study, borrowed.trial_id(trial), names, i, count.total,
                               time.time() - count.batch_started, left)  # fmt: skip
            progress.say(line, bar)
        if bar is not None:
            bar.update(len(trials))
        count.batch_started = time.time()

    def _sampler(self, space: dict, n_existing: int, live: bool) -> tuple[optuna.samplers.BaseSampler, int]:
        """The configured sampler. A seeded one is offset by the trials the study already has, so a
        resumed search does not draw its first trials again, in steps no two worker seeds share
        (seed 1 at 0 trials and seed 0 at 1 trial drew the same trials once); and by the process
        when other workers are live on the study, whose seed may be this one's."""
        seed = OmegaConf.select(self.sampler_cfg, "seed")
        kwargs = {}
        if seed is not None and (n_existing or live):
            kwargs["seed"] = (seed * 100_003 + n_existing + (os.getpid() * 7_919 if live else 0)) % 2**32
        if self.sampler_cfg.get("_target_") == "optuna.samplers.TPESampler" and self.n_jobs > 1:
            # Optuna 5's defaults: a batch asked at once would otherwise sample near-duplicates
            said = " ".join(self.config.hydra.overrides.hydra)
            self.batch_defaults = [k for k in ("multivariate", "constant_liar") if f"sampler.{k}=" not in said]
            kwargs |= dict.fromkeys(self.batch_defaults, True)
        sampler = instantiate(self.sampler_cfg, _execution_whitelist_=SAMPLER_TARGETS, **kwargs)
        n_trials = self.n_trials
        if getattr(sampler, "func", None) is optuna.samplers.GridSampler:
            grid = {}
            for name, distribution in space.items():
                try:
                    grid[name] = borrowed.grid_choices(distribution)
                except ValueError:
                    raise UserError(
                        f"{name}: the grid sampler enumerates choices and ranges, not intervals; "
                        f"fix it ({name}=0.1) or make it a choice ('{name}=choice(0.1,0.2)')"
                    ) from None
            sampler = sampler(grid)
            n_trials = min(n_trials, max(0, math.prod(len(v) for v in grid.values()) - n_existing))
        return sampler, n_trials

    def _tell(
        self, study: optuna.Study, trial: optuna.Trial, run_dirs: list[Path], sweep_dir: Path, raced_out: str | None
    ) -> str | None:
        """Store the trial's outcome from its runs' results; return why it failed, when its failure
        counts against max_failure_rate. A trial that raced out is PRUNED with the mean over the
        seeds it ran, and says why; so is one whose run diverged."""
        results = [RunResult.read(d) for d in run_dirs]
        trial.set_user_attr("runs", [str(d.relative_to(sweep_dir)) for d in run_dirs])
        column = METRICS[self.objective].column
        if all(r.status.usable for r in results):
            values = [r.metric(column) for r in results]
            trial.set_user_attr("seed_values", values)
            if raced_out is not None:
                trial.set_user_attr("mean_over_seeds", sum(values) / len(values))
                trial.set_user_attr("prune_reason", raced_out)
                _tell(study, trial, state=TrialState.PRUNED)
                return None
            if len(self.directions) > 1:  # each objective's mean over the seeds
                _tell(study, trial, [sum(v) / len(results) for v in zip(*(self._values(r) for r in results))])
                return None
            _tell(study, trial, sum(values) / len(values))
            return None
        if all(r.status.trained for r in results):
            _tell(study, trial, state=TrialState.PRUNED)
            return None
        if self.ours and all(r.status.trained or r.status is Status.DIVERGED for r in results):
            # a result of the setting, not an error: PRUNED, which TPE ranks among the worst, where
            # FAIL is ignored and the setting asked again
            diverged = next(r for r in results if r.status is Status.DIVERGED)
            trial.set_user_attr("prune_reason", f"diverged: {diverged.why}")
            _tell(study, trial, state=TrialState.PRUNED)
            return None
        bad = next(r for r in results if not r.status.trained)
        reason = f"{bad.status}: {bad.why}" if bad.why else "the job ended without a result"
        trial.set_user_attr("fail_reason", reason)
        _tell(study, trial, state=TrialState.FAIL)
        log.warning("trial %d failed (%s)", trial.number, reason)
        # another app's task that returned a value it cannot use fails its trial without counting, as in the peer
        return reason if self.ours or bad.traceback is not None else None

    def _write_results(self, study: optuna.Study, sweep_dir: Path) -> None:
        complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
        results: dict[str, Any] = {
            "name": "optuna",
            "study_name": study.study_name,
            "best_params": None,
            "best_value": None,
            "best_trial": None,
            "n_trials": dict(Counter(t.state.name for t in study.trials)),
        }
        if self.stopped is not None:
            results["stopped"] = self.stopped
        if complete and len(self.directions) > 1:  # the Pareto front, as hydra-optuna-sweeper writes it
            results["solutions"] = [
                {"params": dict(t.params), "values": list(t.values), "number": t.number,
                 "run_dir": t.user_attrs.get("runs", [None])[0]} for t in study.best_trials
            ]  # fmt: skip
            log.info("Pareto front: trials %s (of %d completed)",
                     ", ".join(str(t["number"]) for t in results["solutions"]), len(complete))  # fmt: skip
        if complete and len(self.directions) == 1:
            best = study.best_trial
            results |= {
                "best_params": dict(best.params),
                "best_value": best.value,
                "best_trial": {"number": best.number, "run_dir": best.user_attrs.get("runs", [None])[0]},
            }
            name = METRICS[self.objective].name
            if self.confirmed is not None:  # the answer is the confirmed pick; the luckiest trial is shown as such
                results |= self._confirmed_results(study)
                log.info("Luckiest single trial %d: %s = %.4f with %s (one value; the answer is the confirmed "
                         "setting, trial %d's)", best.number, name, best.value, best.params,
                         results["best_trial"]["number"])  # fmt: skip
            else:
                log.info("Best trial %d: %s = %.4f with %s", best.number, name, best.value, best.params)
        atomic_write(sweep_dir / RESULTS_FILE, yaml.safe_dump(results, sort_keys=False))

    def _confirmed_results(self, study: optuna.Study) -> dict[str, Any]:
        """optimization_results.yaml's answer from the confirmation: the pick's params, its mean over
        the race's seeds, its trial; the confirmation's verdict; and the luckiest single trial."""
        from sweep.search import confirm

        race = self.confirmed.race
        v = confirm.verdict(race)
        numbers = {e.dir: trial_number(Path(e.dir)) for e in race.entries}
        pick = next(t for t in study.get_trials(deepcopy=False) if t.number == numbers[v.pick.dir])
        best = study.best_trial
        return {
            "best_params": dict(pick.params),
            "best_value": v.mean,
            "best_trial": {"number": pick.number, "run_dir": self.confirmed.pick_run()},
            "confirmation": confirm.as_dict(v, race, numbers),
            "luckiest_trial": {"number": best.number, "value": best.value, "params": dict(best.params)},
        }


SUMMARY_CALLBACK = "sweep.callbacks.SummaryCallback"


def _end_with_a_summary(hydra_context: Any, config: DictConfig) -> None:
    """Another app's sweep ends as this project's do, in summary.csv and report.md: this project's
    end-of-sweep callback joins the app's, named by its target as a Hydra config names a callback."""
    callbacks = OmegaConf.select(config, "hydra.callbacks") or {}
    if any(str(c.get("_target_", "")) == SUMMARY_CALLBACK for c in callbacks.values() if hasattr(c, "get")):
        return
    borrowed.add_callback(hydra_context, instantiate({"_target_": SUMMARY_CALLBACK},
                                                     _execution_whitelist_=(SUMMARY_CALLBACK,)))  # fmt: skip


def _extender(target: str) -> Any:
    """hydra-optuna-sweeper's `custom_search_space`: a function (config, trial) that samples more,
    instantiated under the app's execution whitelist; refused, it is one line saying how to allow it."""
    from hydra.errors import InstantiationException

    try:
        return instantiate({"_target_": target, "_partial_": True})
    except InstantiationException as e:
        why = " ".join(str(e).split())[:200]
        raise UserError(
            f"hydra.sweeper.custom_search_space={target}: cannot be used ({why}); a function the sweeper calls "
            f"must be one you trust: name it in the environment, SWEEP_TRUSTED_TARGETS={target} (see docs/search.md)"
        ) from None


def _said(direction: Any) -> str:
    return f"[{','.join(direction)}]" if isinstance(direction, (list, ListConfig)) else str(direction)


def _subdir(job: tuple[str, ...]) -> str:
    return next(o.split("=", 1)[1] for o in job if o.startswith("hydra.sweep.subdir="))


def _seed(job: tuple[str, ...], key: str) -> int | None:
    found = [o.split("=", 1)[1] for o in job if o.lstrip("+").split("=", 1)[0] == key]
    return int(found[0]) if found and found[0].lstrip("-").isdigit() else None


def _is_direction(v: Any, s: dict) -> str | None:
    ok = v in ("auto", "minimize", "maximize") or (
        isinstance(v, (list, ListConfig)) and all(d in ("minimize", "maximize") for d in v)
    )
    return None if ok else "auto, minimize or maximize"


def _is_storage(v: Any, s: dict) -> str | None:
    if v is None or storage_kind(v) is not None:
        return None
    return "null (SQLite in the sweep dir), an sqlite://, postgresql://, mysql:// URL, or journal:///path"


def _racing_seeds(v: Any, s: dict) -> str | None:
    if not s["race"] or (isinstance(v, int) and 2 <= v < s["repeats"]):
        return None
    return (f"an integer in [2, hydra.sweeper.repeats={s['repeats']}] and below it: a race compares trials over "
            "their seeds and stops one between its seeds, so it needs more repeats than min_seeds")  # fmt: skip


EXTRA_RULES = {"direction": _is_direction, "storage": _is_storage, "min_seeds": _racing_seeds}


def _trial_line(
    study: Any, trial_id: int, names: list[str], done: int, total: int, seconds: float, eta_s: float | None
) -> progress.Line:
    """The progress line for a trial that was just told its outcome (`names`: its objectives')."""
    t = borrowed.stored_trial(study, trial_id)
    params = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items())
    state = t.state.name
    if state == "COMPLETE":
        if len(t.values) == len(names):
            said = ", ".join(f"{n} {v:.4g}" for n, v in zip(names, t.values))
        else:  # another app's several values, unnamed
            said = f"{names[0]} {[round(v, 4) for v in t.values]}"
    elif state == "FAIL":
        said = f"FAIL: {str(t.user_attrs.get('fail_reason', ''))[:80]}"
    elif state == "PRUNED" and "prune_reason" in t.user_attrs:  # raced out: stopped adding seeds
        said = f"PRUNED {str(t.user_attrs['prune_reason'])[:100]}"
    else:
        said = state
    try:
        best = study.best_trial
        best_said = f"{best.value:.4f}, trial {best.number}"
    except (ValueError, RuntimeError):  # none complete yet, or several objectives
        best_said = None
    return progress.Line(done, total, f"trial {t.number} {params}".strip(), said, best_said, seconds, eta_s)


@dataclass
class _Space:
    """The search space: what is sampled, what is fixed, what is deleted, and the first seed of a
    trial's repeats (None without repeats)."""

    distributions: dict[str, Any]
    fixed: dict[str, Any]
    deletions: list[str]
    seed: int | None
    first: int = 0  # the first seed of every run of the search (the config's, or the one given)


@dataclass
class _Count:
    """How far the search is in this invocation."""

    total: int
    finished: int = 0
    failed: int = 0
    started: float = field(default_factory=time.time)
    batch_started: float = field(default_factory=time.time)

    last: str = ""  # the last failure's reason

    def add(self, told: list[str | None]) -> None:
        """Count a batch of trials, each told None or the reason it failed."""
        self.finished += len(told)
        self.failed += sum(why is not None for why in told)
        self.last = next((why for why in reversed(told) if why is not None), self.last)


def _incumbent(study: optuna.Study, directions: list[str]) -> tuple[int, list[float]] | None:
    """The best completed trial's number and objective at each seed, or None before there is one."""
    if len(directions) != 1:
        return None
    try:
        best = study.best_trial
    except ValueError:  # no trial completed yet
        return None
    values = best.user_attrs.get("seed_values")
    ok = isinstance(values, list) and values and all(isinstance(v, (int, float)) for v in values)
    return (best.number, [float(v) for v in values]) if ok else None


def _stopped_before(study: optuna.Study) -> Any:
    """The stop an earlier invocation kept with the study (its numbers checked), or None."""
    from sweep.search.stopping import Stop

    said = study.user_attrs.get("stopped")
    try:
        stop = Stop(int(said["trials"]), float(said["bound"]), float(said["noise"]))
    except (TypeError, KeyError, ValueError, OverflowError):
        return None
    return stop if stop.trials >= 0 and math.isfinite(stop.bound) and math.isfinite(stop.noise) else None


def _setting(params: dict, user_attrs: dict, fixed: dict) -> dict:
    """What makes a trial's setting: its sampled values and the fixed ones it ran with."""
    return {**params, **{k: user_attrs.get(k) for k in fixed}}


def _verdict_line(v: Any, record: Any, objective: str) -> str:
    """The confirmation's answer in one line: the winner, or the leaders it could not tell apart."""

    def trial(e: Any) -> int | None:
        return trial_number(Path(e.dir))

    seeds = record.race.rounds
    if v.confirmed:
        return (f"trial {trial(v.pick)}'s setting is the best, {objective} {v.mean:.4f} (95% interval "
                f"{v.low:.4f}..{v.high:.4f}) over {seeds} seeds, ahead of the other leaders beyond noise")  # fmt: skip
    names = ", ".join(f"trial {trial(e)} ({e.mean(seeds):.4f})" for e in v.tied)
    return (f"not distinguishable over {seeds} seeds: {names}; the pick, trial {trial(v.pick)}, has the best mean "
            f"{v.mean:.4f} (95% interval {v.low:.4f}..{v.high:.4f})")  # fmt: skip


def _has_running(study: optuna.Study) -> bool:
    return any(t.state == TrialState.RUNNING for t in study.get_trials(deepcopy=False))


def _tell(
    study: optuna.Study, trial: optuna.Trial, value: float | None = None, state: TrialState | None = None
) -> None:
    try:
        study.tell(trial, value, state=state)
    except RuntimeError as e:
        # GridSampler calls study.stop() when its grid is used up, which only study.optimize
        # allows; the trial's state is stored before that (optuna's tell stores it in `finally`).
        if "Study.stop" not in str(e):
            raise


def _reconcile_finished(study: optuna.Study, sweep_dir: Path, column: str, repeats: int = 1) -> None:
    """A stale RUNNING trial whose runs all completed (its sweeper was killed while a launcher's
    workers finished them) is told COMPLETE from its results, not failed: all `repeats` of them (a
    racing trial killed between its seeds has fewer, and a complete trial has all its seeds)."""
    storage = borrowed.storage(study)
    for trial_id in borrowed.stale_trial_ids(study):
        trial = storage.get_trial(trial_id)
        folder = sweep_dir / trial_dir(trial.number)
        run_dirs = seed_dirs(folder) or [folder]
        found = [RunResult.read(d) for d in run_dirs]
        if len(found) == repeats and all(r.status is Status.COMPLETED for r in found):
            storage.set_trial_user_attr(trial_id, "runs", [str(d.relative_to(sweep_dir)) for d in run_dirs])
            value = sum(r.metric(column) for r in found) / len(found)
            storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [value])
            log.info("trial %d: its runs completed after its sweeper stopped; stored as COMPLETE", trial.number)


def _fail_stale_trials(study: optuna.Study) -> None:
    """Mark FAIL the RUNNING trials whose process stopped sending heartbeats (it was killed), saying so."""
    storage = borrowed.storage(study)
    for trial_id in borrowed.stale_trial_ids(study):
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):  # another worker failed it first
            storage.set_trial_user_attr(trial_id, "fail_reason", STALE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


class _Heartbeat:
    """While a batch runs, record each of its trials' heartbeats, as study.optimize would."""

    def __init__(self, storage: Any, trial_ids: list[int]) -> None:
        self.storage, self.trial_ids = storage, trial_ids
        self.interval = storage.get_heartbeat_interval() if hasattr(storage, "get_heartbeat_interval") else None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while True:
            for trial_id in self.trial_ids:
                self.storage.record_heartbeat(trial_id)
            if self.stop.wait(self.interval):
                return

    def __enter__(self) -> _Heartbeat:
        if self.interval:
            self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()
