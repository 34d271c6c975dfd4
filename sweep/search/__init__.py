"""The Optuna search: `plugin` (what Hydra loads), `engine` (the search), `trial_link` (the job's
side) and `study` (storage, studies and trial folders), each importing only those after it."""
