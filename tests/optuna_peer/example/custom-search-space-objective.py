"""A four-dimensional sphere whose z and +w a function samples (`custom_search_space`): z within
`max_z_difference_from_x` of x, and w, a key the config lacks, in [0, 1] (our own writing)."""

import hydra
from omegaconf import DictConfig


@hydra.main(config_path="custom-search-space", config_name="config")
def multi_dimensional_sphere(cfg: DictConfig) -> float:
    return cfg.w**2 + cfg.x**2 + cfg.y**2 + cfg.z**2


def configure(cfg: DictConfig, trial) -> None:
    x = trial.params["x"]
    trial.suggest_float("z", x - cfg.max_z_difference_from_x, x + cfg.max_z_difference_from_x)
    trial.suggest_float("+w", 0.0, 1.0)  # `+`: w is not in the config


if __name__ == "__main__":
    multi_dimensional_sphere()
