"""The whole command as a user runs it: grid sweeps land a summary, a failing run does not stop
the others, bad input is one line and a non-zero exit. In this process (Hydra's app and its edge
checks as the command runs them), but for one test per exit code that the shell sees."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
from formats import write_mnist
from helpers import REPO, app, cli, train

from sweep.errors import UserError, one_line


@pytest.mark.slow
def test_grid_multirun_lands_a_summary_row_per_run(tmp_path):
    sweep_dir = tmp_path / "grid"
    p = app(
        "-m",
        "data=digits",
        "epochs=2",
        "optimizer=adam,sgd",
        "lr=1e-3,1e-2",
        f"hydra.sweep.dir={sweep_dir}",
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr
    assert "Callback SummaryCallback" not in p.stderr, p.stderr  # the summary and report landed
    summary = pd.read_csv(sweep_dir / "summary.csv")
    assert len(summary) == 4
    assert list(summary.columns[:3]) == ["run", "optimizer", "lr"]
    assert set(zip(summary.optimizer, summary.lr)) == {("adam", 1e-3), ("adam", 1e-2), ("sgd", 1e-3), ("sgd", 1e-2)}
    assert (summary.status == "completed").all()
    assert summary.best_val_acc.between(0, 1).all() and summary.test_acc.notna().all()
    # printed sorted by the objective, best first
    printed = p.stdout[p.stdout.index("Summary of 4 runs") :]
    best = summary.sort_values("best_val_acc", ascending=False).iloc[0]
    assert printed.splitlines()[2].split()[:3] == [str(best.run), best.optimizer, f"{best.lr:.4g}"]
    # a line after each run: how far, the swept keys only, its objective, the best so far, the ETA
    lines = re.findall(r"^\[(\d)/4\] (optimizer=\w+ lr=\S+) → val_acc ([\d.]+) \(best so far ([\d.]+), run (\d)\)"
                       r" · \d+ s( · ETA \d+ (s|min))?$", p.stdout, re.M)  # fmt: skip
    assert [int(n) for n, *_ in lines] == [1, 2, 3, 4]
    assert [line[1] for line in lines] == [
        "optimizer=adam lr=0.001",
        "optimizer=adam lr=0.01",
        "optimizer=sgd lr=0.001",
        "optimizer=sgd lr=0.01",
    ]  # as Hydra writes them
    last = lines[-1]
    assert float(last[3]) == pytest.approx(summary.best_val_acc.max(), abs=1e-4) and last[5] == ""  # no ETA: done


@pytest.mark.slow
def test_a_failing_run_does_not_stop_the_others(tmp_path):
    sweep_dir = tmp_path / "s"
    # Adam takes no `nesterov` argument: torch refuses it inside the job, a runtime failure
    p = app("-m", "data=digits", "epochs=1", "optimizer=adam,sgd", "++optimizer.nesterov=true",
            f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)  # fmt: skip
    assert p.returncode == 0, p.stderr
    summary = pd.read_csv(sweep_dir / "summary.csv").set_index("optimizer")
    assert summary.loc["adam", "status"] == "failed" and "nesterov" in summary.loc["adam", "error"]
    assert summary.loc["sgd", "status"] == "completed"
    assert json.loads((sweep_dir / "0" / "result.json").read_text())["stop_reason"] == "failed"


@pytest.mark.parametrize(
    "overrides, key",
    [
        (("lr=0",), "lr=0"),
        (("lr=-1e-3",), "lr=-0.001"),
        (("lr=inf",), "lr=inf"),
        (("batch_size=0",), "batch_size=0"),
        (("dropout=1.0",), "dropout=1.0"),
        (("epochs=0",), "epochs=0"),
        (("epochs=99999999999999999999",), "epochs=99999999999999999999"),
        (("patience=-1",), "patience=-1"),
        (("min_delta=inf",), "min_delta=inf"),
        (("threads=5000",), "threads=5000"),
        (("device=cpu:abc",), "device=cpu:abc"),
        (("data.val_fraction=1.5",), "data.val_fraction=1.5"),
        (("objective=test_acc",), "objective=test_acc"),
        (("scheduler=step", "scheduler.step_size=0"), "scheduler.step_size=0"),
        (("scheduler=step", "scheduler.gamma=-1"), "scheduler.gamma=-1"),
        (("scheduler=multistep", "scheduler.milestones=[15,10]"), "scheduler.milestones=[15, 10]"),
        (("optimizer.betas=[0.9]",), "optimizer.betas=[0.9]"),
        (("optimizer=sgd", "optimizer.momentum=-1"), "optimizer.momentum=-1"),
        (("model.hidden=[0]",), "model.hidden=[0]"),
        (("model.batch_norm=maybe",), "model.batch_norm=maybe"),
        (("model=cnn", "model.kernel_size=100"), "model.kernel_size=100"),
        (("model=cnn", "model.kernel_size=9"), "model.kernel_size=9: must be at most the image's side, 8"),
        (("dropout=${nope}",), "the config does not resolve"),
    ],
)
def test_bad_values_get_one_line_and_no_run(tmp_path, overrides, key):
    """The checks the entry point makes, called as it calls them; the exit code and the printed line
    are the next tests' subject."""
    with pytest.raises(UserError) as e:
        train(tmp_path / "run", "data=digits", *overrides)
    assert one_line(e.value).startswith(f"error: {key}")
    assert not (tmp_path / "run" / "result.json").exists()


def test_a_data_root_without_the_files_is_one_line(tmp_path):
    p = app(
        "data=mnist",
        f"data.root={tmp_path / 'empty'}",
        "data.download=false",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert p.returncode != 0 and "Traceback" not in p.stderr
    [line] = p.stderr.strip().splitlines()
    assert line.startswith(f"error: data.root={tmp_path / 'empty'}:") and "data=digits" in line
    assert not (tmp_path / "run" / "result.json").exists()


@pytest.mark.parametrize(
    "args, line",
    [
        (
            ("optimizer=adm",),
            "error: optimizer=adm: no such option; options: adadelta, adagrad, adam, adamw, rmsprop, sgd",
        ),
        (("-m", "optimizer=adam,sgdd"), "error: optimizer=sgdd: no such option; options: adadelta, adagrad, adam,"),
        (("lrr=0.01",), "error: lrr: no such key; did you mean lr?"),
        (("+lrr=0.01",), "error: lrr: no part of the run reads it; did you mean lr?"),  # Hydra's own hint
        (("model.hiddn=[64]",), "error: model.hiddn: no such key in model=mlp; did you mean model.hidden?"),
        (("optimizer.nesterov=true",), "error: optimizer.nesterov: no such key in optimizer=adam;"),
        (("search/pruner=medain",), "error: search/pruner=medain: no such option; options: hyperband, median,"),
        (("lr=[1,2",), "error: lr=[1,2: not an override Hydra can read"),
    ],
)
def test_the_commonest_mistakes_are_one_line_and_exit_2(tmp_path, args, line):
    p = app(*args, f"hydra.run.dir={tmp_path / 'run'}", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [p.stderr.strip()], p.stderr
    assert p.stderr.startswith(line), p.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "sweep").exists()


def test_a_grid_larger_than_a_sweep_can_hold_is_one_line_at_once(tmp_path):
    """Hydra's basic sweeper composes a config for every job before the first runs: a million-run
    grid was a silent minute and more; it is counted without expanding it, and refused."""
    p = app("-m", "lr=range(1,1000001)", "optimizer=adam,sgd", f"hydra.sweep.dir={tmp_path / 's'}", cwd=tmp_path)
    assert p.returncode == 2 and p.stderr.strip() == (
        "error: a grid of more than 10000 runs (lr=range(1,1000001) optimizer=adam,sgd); narrow it, or search the "
        "space with search=optuna"
    )
    assert not (tmp_path / "s").exists()


def test_a_refused_single_run_leaves_no_run_dir(tmp_path):
    p = app("data=digits", "lr=0", cwd=tmp_path)
    assert p.returncode == 2 and p.stderr == "error: lr=0: must be a number > 0\n"
    assert not list((tmp_path / "outputs").rglob("*.log")) and not list((tmp_path / "outputs").rglob(".hydra"))


@pytest.mark.slow
def test_a_grid_whose_first_job_is_refused_prints_the_line_only(tmp_path):
    sweep = tmp_path / "s"
    p = app("-m", "data=mnist", f"data.root={tmp_path / 'none'}", "data.download=false", "lr=1e-3,1e-2",
            f"hydra.sweep.dir={sweep}", cwd=tmp_path)  # fmt: skip
    assert p.returncode == 2
    assert [line for line in p.stderr.splitlines() if not line.startswith("[")] == [
        f"error: data.root={tmp_path / 'none'}: no MNIST files at {tmp_path / 'none' / 'MNIST' / 'raw'} and "
        "data.download=false (Dataset not found. You can use download=True to download it); put the files there, "
        "or use data=digits, which works offline"
    ]
    assert "Summary" not in p.stdout and not (sweep / "summary.csv").exists() and not (sweep / "0").exists()
    assert not sweep.exists()  # nor the multirun.yaml and progress plan of a sweep that never ran
    tmp_path.joinpath("mine").mkdir()  # a folder of the user's, named as the sweep dir: left, and left empty
    p = app("-m", "data=mnist", f"data.root={tmp_path / 'none'}", "data.download=false", "lr=1e-3,1e-2",
            f"hydra.sweep.dir={tmp_path / 'mine'}", cwd=tmp_path)  # fmt: skip
    assert p.returncode == 2 and (tmp_path / "mine").is_dir() and not any((tmp_path / "mine").iterdir())


def test_help_lists_the_groups_before_the_config(tmp_path):
    p = app("--help", cwd=tmp_path)
    assert p.returncode == 0
    for group in ("optimizer", "scheduler", "data"):
        options = ", ".join(sorted(f.stem for f in (REPO / "conf" / group).glob("*.yaml")))
        assert p.stdout.index(f"{group}: {options}") < p.stdout.index("== The composed config ==")
    assert "hydra:" not in p.stdout.split("== Config groups")[1].split("==")[0]  # Hydra's own settings are not a group


def test_relative_data_root_reads_torchvision_files(tmp_path):
    write_mnist(tmp_path / "data", "FashionMNIST", n_train=300, n_test=60)
    p = app("epochs=2", "data.download=false", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)  # default data
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()  # a single run says where it lands, at its start and its end
    assert lines[0] == f"run dir: {tmp_path / 'run'}" and lines[-1].startswith(f"results in {tmp_path / 'run'}")
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "completed" and result["best_val_acc"] > 0.5  # the bands are learnable


def test_a_bad_value_is_one_line_and_exit_2_as_the_shell_sees_it(tmp_path):
    p = cli("data=digits", "lr=0", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert p.returncode == 2 and p.stderr.strip().splitlines() == ["error: lr=0: must be a number > 0"]
    assert not (tmp_path / "run" / "result.json").exists()


def test_a_key_of_the_option_a_preset_chooses_is_known(tmp_path):
    """+debug=tiny chooses data=synthetic: its keys are the data group's keys then."""
    p = app("+debug=tiny", "data.n_train=64", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    p = app("-m", "model=mlp,cnn", "model.hidden=[64]", f"hydra.sweep.dir={tmp_path / 's'}", cwd=tmp_path)
    assert p.returncode == 2 and p.stderr.startswith("error: model.hidden: no such key in model=cnn;")
