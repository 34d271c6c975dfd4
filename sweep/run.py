"""Entry point: `python sweep/run.py [-m] [GROUP=OPTION ...] [KEY=VALUE ...]` (or `sweep-run`).

Hydra composes the config from conf/; each job trains one configuration and returns the
objective, which Hydra's sweepers (grid or Optuna) read. The one place a job's user error
becomes one line and an exit code, and the one place a job reads Hydra's own config.
"""

import math
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: import `sweep` as the package from the repo root, rather than letting
    # this folder's modules (data, statistics, ...) shadow top-level names.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import hydra  # noqa: E402
from hydra.utils import execution_whitelist  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from sweep.trust import TRUSTED_TARGETS  # noqa: E402

CONF = Path(__file__).resolve().parent.parent / "conf"  # absolute: `sweep-run` imports this file as a module


def _writes_result_json(task_function):
    """Mark the task for the sweepers: its jobs write result.json (another app's return a value)."""
    from sweep.search.trial_link import OWN_TASK

    setattr(task_function, OWN_TASK, True)
    return task_function


@hydra.main(config_path=str(CONF), config_name="config", execution_whitelist=TRUSTED_TARGETS)
@_writes_result_json
def task(cfg: DictConfig) -> float:
    """Hydra's task function: one job (`sweep.job.run_job`), its user errors one line, its line of progress."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from sweep import stops
    from sweep.errors import UserError, exit_with
    from sweep.search.trial_link import TRIAL_ENV
    from sweep.validate import check_command_line_keys, validate

    stops.watch_sweeper()  # in a joblib worker: end with the sweeper, never outlive it
    hc = HydraConfig.get()
    # as typed: `dropout=${nope}` is a string here, not an interpolation to resolve
    run_dir, overrides = Path(hc.runtime.output_dir), OmegaConf.to_container(hc.overrides.task, resolve=False)
    single = hc.mode == RunMode.RUN
    started = time.time()
    try:
        if TRIAL_ENV in os.environ:  # keys a search's custom_search_space added: a `+key` no part of the run reads
            check_command_line_keys([o for o in overrides if not o.lstrip("+").startswith("hydra.")], CONF)
        validate(cfg)  # before importing torch: a typo costs the user no start-up time
        if single:
            print(f"run dir: {run_dir}", flush=True)
        from sweep.job import run_job
        from sweep.progress import bars_wanted, runs_bar
        from sweep.search.round_link import round_link
        from sweep.search.trial_link import trial_ref

        trial, jobs = trial_ref(hc.sweeper, hc.sweep.dir), hc.launcher.get("n_jobs", 1)
        race = None if single else round_link(hc.sweep.dir, cfg.seed)  # a race's run after its round's leader
        grid_bar = bars_wanted(cfg.progress) and not single and trial is None and jobs in (None, 1)  # one process
        loggers = _loggers(cfg, hc, run_dir, overrides, single, trial is not None)
        with execution_whitelist(TRUSTED_TARGETS), runs_bar(Path(hc.sweep.dir), grid_bar):  # again: for launchers
            value = run_job(cfg, run_dir, overrides, jobs, trial, loggers, race)
    except UserError as e:
        if TRIAL_ENV not in os.environ:
            _forget(run_dir, hc.job.name)
            exit_with(e)
        # a value the search sampled (lr=interval(-1,1) drew -0.3): this trial fails, not the search
        from sweep.results import RunResult, make_record
        from sweep.search.folders import trial_number

        record = make_record(overrides, cfg.get("seed"), cfg.get("objective"), trial_number(run_dir))
        RunResult.failed(record, str(e)).write(run_dir)
        return math.nan
    if single:
        print(f"results in {run_dir}", flush=True)
    elif TRIAL_ENV not in os.environ:  # a grid's run; a search's trials get their line from the sweeper
        from sweep.outcomes import objectives
        from sweep.progress import after_run, say

        if line := after_run(Path(hc.sweep.dir), run_dir, time.time() - started, objectives(cfg.objective)[0]):
            say(line)
    if single and math.isnan(value):  # one run that failed or diverged: say so in the exit code
        from sweep.results import RESULT_FILE, RunResult

        result = RunResult.read(run_dir)
        print(f"error: the run {result.status}{': ' + result.why if result.why else ''}; "
              f"see {run_dir / RESULT_FILE}", file=sys.stderr, flush=True)  # fmt: skip
        sys.exit(1)
    return value


def _loggers(cfg: DictConfig, hc: DictConfig, run_dir: Path, overrides: list[str], single: bool, trial: bool):
    """The experiment trackers this run reports to (`logger=...`), or None."""
    from sweep import rules
    from sweep.loggers import Loggers, LoggerSettings, RunInfo, flatten
    from sweep.results import overrides_dict
    from sweep.search.folders import trial_number

    settings = LoggerSettings.of(cfg.get("logger"))
    if not settings.wanted:
        return None
    resolved = rules.strip(OmegaConf.to_container(cfg, resolve=True))
    params = {k: v for k, v in flatten(resolved).items() if not k.startswith("logger.")}  # no tracking URI's secrets
    params |= {g: o for g, o in hc.runtime.choices.items() if o is not None and not g.startswith("hydra")}
    sweep_dir = None if single else Path(hc.sweep.dir)
    number = trial_number(run_dir) if trial else None
    return Loggers(settings, RunInfo(run_dir, sweep_dir, params, overrides_dict(overrides), number))


def _forget(run_dir: Path, job_name: str) -> None:
    """Remove a run dir that holds only what Hydra wrote before the run was refused, so that no
    summary lists a run that never was (and the default dated folder, if that leaves it empty)."""
    import shutil

    from sweep.files import LOCK_FILE

    if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= {".hydra", LOCK_FILE, f"{job_name}.log"}:
        shutil.rmtree(run_dir, ignore_errors=True)
        if run_dir.parent.parent.name == "runs" and not any(run_dir.parent.iterdir()):
            run_dir.parent.rmdir()


def main() -> None:
    from sweep import stops
    from sweep.errors import UserError, exit_with
    from sweep.validate import (
        check_command_line_keys,
        check_command_line_targets,
        check_grid_size,
        check_output_dirs,
        check_sampler,
    )

    try:
        check_sampler(sys.argv[1:])
        check_command_line_keys(sys.argv[1:], CONF)
        check_command_line_targets(sys.argv[1:])
        check_output_dirs(sys.argv[1:])
        check_grid_size(sys.argv[1:])
    except UserError as e:
        exit_with(e)
    stops.install()
    stops.mark_sweeper()
    try:
        task()
    except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM, after the run and the sweep wrote what they had
        print(f"interrupted ({stops.describe(stop)}): finished runs are kept; run the same command to resume",
              file=sys.stderr, flush=True)  # fmt: skip
        sys.exit(stops.exit_code(stop))


if __name__ == "__main__":
    main()
