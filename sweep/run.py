"""Entry point: `python sweep/run.py [-m] [GROUP=OPTION ...] [KEY=VALUE ...]`.

Hydra composes the config from conf/; each job trains one configuration and returns the
objective, which Hydra's sweepers (grid or Optuna) read.
"""

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: import `sweep` as the package from the repo root, rather than letting
    # this folder's modules (data, train, ...) shadow top-level names.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import hydra
from hydra.utils import execution_whitelist
from omegaconf import DictConfig

from sweep import TRUSTED_TARGETS


@hydra.main(config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig

    from sweep.validate import ConfigError, user_error, validate

    try:
        validate(cfg)  # before importing torch: a typo costs the user no start-up time
    except ConfigError as e:
        user_error(str(e))
    from sweep.job import run

    hc = HydraConfig.get()
    with execution_whitelist(TRUSTED_TARGETS):  # again: launchers may run jobs in other processes
        return run(cfg, Path(hc.runtime.output_dir), list(hc.overrides.task), hc.launcher.get("n_jobs", 1))


if __name__ == "__main__":
    with execution_whitelist(TRUSTED_TARGETS):
        main()
