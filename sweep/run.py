"""Entry point: `python sweep/run.py [-m] [GROUP=OPTION ...] [KEY=VALUE ...]` (or `sweep-run`).

Hydra composes the config from conf/; each job trains one configuration and returns the
objective, which Hydra's sweepers (grid or Optuna) read. The one place a job's user error
becomes one line and an exit code, and the one place a job reads Hydra's own config.
"""

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: import `sweep` as the package from the repo root, rather than letting
    # this folder's modules (data, statistics, ...) shadow top-level names.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import hydra  # noqa: E402
from hydra.utils import execution_whitelist  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from sweep import TRUSTED_TARGETS  # noqa: E402

CONF = Path(__file__).resolve().parent.parent / "conf"  # absolute: `sweep-run` imports this file as a module


@hydra.main(config_path=str(CONF), config_name="config", execution_whitelist=TRUSTED_TARGETS)
def train(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig

    from sweep.errors import UserError, exit_with
    from sweep.validate import validate

    try:
        validate(cfg)  # before importing torch: a typo costs the user no start-up time
        from sweep.job import run
        from sweep.search.trial_link import trial_ref

        hc = HydraConfig.get()
        trial = trial_ref(hc.sweeper, hc.sweep.dir)
        with execution_whitelist(TRUSTED_TARGETS):  # again: launchers may run jobs in other processes
            return run(cfg, Path(hc.runtime.output_dir), list(hc.overrides.task), hc.launcher.get("n_jobs", 1), trial)
    except UserError as e:
        exit_with(e)


def main() -> None:
    from sweep.errors import UserError, exit_with
    from sweep.validate import check_command_line_targets

    try:
        check_command_line_targets(sys.argv[1:])
    except UserError as e:
        exit_with(e)
    train()


if __name__ == "__main__":
    main()
