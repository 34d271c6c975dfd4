"""Search efficiency on `digits`: a full grid against TPE with this project's median-pruner
defaults, over the same lr x dropout x batch_size values, repeated over sampler seeds.

    python tests/benchmarks/bench_search.py [--seeds 5] [--trials 40]

For each seed, TPE (Hydra's sampler defaults) asks trials one at a time; each trains exactly as
`python sweep/run.py -m search=optuna search/pruner=median` would train it (the same job code,
reporting its epochs to its trial through an SQLite study). It prints the epochs the search spent
until its best completed trial first reached the grid's best validation accuracy within 0.5 points,
as a fraction of the epochs the whole grid spent (target: at most 40%), and the median over seeds.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(REPO), str(HERE.parent)]

LRS = ("1e-4", "3e-4", "1e-3", "3e-3", "1e-2")
DROPOUTS = ("0.0", "0.2", "0.4")
BATCHES = ("32", "64", "128")
TOLERANCE = 0.005  # half a point of accuracy


def train(overrides: list[str], run_dir: Path, trial=None) -> dict:
    """One run as the command would do it: compose, validate, train; returns its result.json."""
    import json

    from helpers import make_config
    from hydra.utils import execution_whitelist

    from sweep.job import run_job
    from sweep.trust import TRUSTED_TARGETS
    from sweep.validate import validate

    cfg = make_config(*overrides)
    validate(cfg)
    run_dir.mkdir(parents=True)
    with execution_whitelist(TRUSTED_TARGETS):
        run_job(cfg, run_dir, overrides, 1, trial)
    return json.loads((run_dir / "result.json").read_text())


def grid(tmp: Path) -> tuple[float, int]:
    """The grid's best val_acc and the epochs it spent."""
    best, epochs = 0.0, 0
    for i, (lr, dropout, batch) in enumerate(itertools.product(LRS, DROPOUTS, BATCHES)):
        r = train(["data=digits", f"lr={lr}", f"dropout={dropout}", f"batch_size={batch}"], tmp / "grid" / str(i))
        best, epochs = max(best, r["best_val_acc"]), epochs + r["epochs_run"]
    return best, epochs


def search(tmp: Path, seed: int, target: float, max_trials: int) -> tuple[int | None, int, int]:
    """Epochs TPE + median pruning spent until it matched `target` (None if it never did within
    `max_trials`), the trials it took and how many were pruned."""
    import optuna
    from helpers import make_config
    from omegaconf import OmegaConf

    from sweep.search.study import StudyRef
    from sweep.search.trial_link import TrialRef

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    hydra = make_config("search=optuna", "search/pruner=median", return_hydra_config=True).hydra
    pruner = OmegaConf.to_container(hydra.sweeper.pruner, resolve=True)
    startup = hydra.sweeper.sampler.n_startup_trials
    sweep_dir = tmp / f"search_{seed}"
    sweep_dir.mkdir()
    ref = StudyRef(None, "bench")
    study = ref.create(ref.open(sweep_dir), ["maximize"])
    study.sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
    epochs = pruned = 0
    best = 0.0
    for n in range(max_trials):
        trial = study.ask(
            {
                "lr": optuna.distributions.CategoricalDistribution(LRS),
                "dropout": optuna.distributions.CategoricalDistribution(DROPOUTS),
                "batch_size": optuna.distributions.CategoricalDistribution(BATCHES),
            }
        )
        overrides = ["data=digits"] + [f"{k}={v}" for k, v in trial.params.items()]
        r = train(overrides, sweep_dir / f"trial_{n:04d}", TrialRef(trial._trial_id, ref, str(sweep_dir), pruner))
        epochs += r["epochs_run"]
        if r["status"] == "pruned":
            pruned += 1
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        study.tell(trial, r["best_val_acc"])
        best = max(best, r["best_val_acc"])
        if best >= target - TOLERANCE:
            return epochs, n + 1, pruned
    return None, max_trials, pruned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=40, help="the most trials a search may take")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        best, grid_epochs = grid(Path(tmp))
        n = len(LRS) * len(DROPOUTS) * len(BATCHES)
        print(f"grid: {n} runs, {grid_epochs} epochs, best val_acc {best:.4f}")
        fractions = []
        for seed in range(args.seeds):
            epochs, trials, pruned = search(Path(tmp), seed, best, args.trials)
            if epochs is None:
                print(f"TPE seed {seed}: no match within {trials} trials ({pruned} pruned)")
                fractions.append(float("inf"))
                continue
            fractions.append(epochs / grid_epochs)
            share = epochs / grid_epochs
            print(f"TPE seed {seed}: matched after {trials} trials ({pruned} pruned), {epochs} epochs = {share:.0%}")
        matched = sum(f != float("inf") for f in fractions)
        print(
            f"median over {args.seeds} seeds: {statistics.median(fractions):.0%} of the grid's epochs (target <= 40%); "
            f"{matched} of {args.seeds} seeds matched the grid within {args.trials} trials"
        )


if __name__ == "__main__":
    main()
