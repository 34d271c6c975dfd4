"""hydra-optuna-sweeper's test file is kept close to its own text: its cases that run a sweep (a
process, or Hydra's sweep runner) join this project's slow set here, not by editing the file."""

import pytest

SWEEPS = ("test_launch_jobs", "test_optuna_example", "test_example_with_grid_sampler",
          "test_optuna_multi_objective_example", "test_optuna_custom_search_space_example", "test_failure_rate",
          "test_rejected_result_marks_trial_failed", "test_example_with_removed_motpe")  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.originalname in SWEEPS:
            item.add_marker(pytest.mark.slow)
