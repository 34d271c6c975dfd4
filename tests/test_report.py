"""Comparison reports on real tiny sweeps, as a user reads them, with each defect the issue saw:
selection on validation, unconverged runs flagged, unlike sweeps not pooled, readable searches, and
a report that never crashes, never goes stale and never overwrites the sweep's own."""

from __future__ import annotations

import json
import os
import shutil

import matplotlib.image
import pandas as pd
import pytest
import yaml
from helpers import app, report

pytestmark = pytest.mark.slow  # real sweeps with their plots: seconds each
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """A real 2x2 sweep: two optimizers over two seeds, with the end-of-sweep report."""
    tmp = tmp_path_factory.mktemp("grid")
    p = app(
        "-m", "data=digits", "epochs=3", "optimizer=adam,sgd", "seed=0,1", f"hydra.sweep.dir={tmp / 'sweep'}", cwd=tmp
    )
    assert p.returncode == 0, p.stderr[-3000:]
    return tmp / "sweep", p


def copy(grid, tmp_path, name="copy"):
    shutil.copytree(grid[0], tmp_path / name)
    return tmp_path / name


def rewrite(run_dir, **fields):
    record = json.loads((run_dir / "result.json").read_text())
    (run_dir / "result.json").write_text(json.dumps(record | fields))


def test_a_sweep_over_seeds_ends_in_a_report_ranked_by_validation(grid):
    sweep, _ = grid
    comparison = pd.read_csv(sweep / "comparison.csv")
    assert len(comparison) == 2 and (comparison.n_runs == 2).all() and "seed" not in comparison.columns
    summary = pd.read_csv(sweep / "summary.csv")
    for _, level in comparison.iterrows():  # the sweep's objective, val_acc, by default
        assert level["mean"] == pytest.approx(summary[summary.optimizer == level.optimizer].best_val_acc.mean())
    text = (sweep / "report.md").read_text()
    assert text.startswith("# Sweep report: val_acc") and "paired over 2 runs matched on seed" in text
    best = comparison.optimizer[0]
    assert f"python sweep/run.py -m data=digits epochs=3 optimizer={best} seed=0,1" in text
    for png in ("learning_curves.png", "val_acc_by_level.png", "best_run_confusion_matrix.png"):
        assert (sweep / png).read_bytes()[:8] == PNG and matplotlib.image.imread(sweep / png).shape[0] > 100
        assert f"({png})" in text


def test_the_test_split_never_selects(grid, tmp_path):
    sweep = copy(grid, tmp_path)
    # adam is best by validation, sgd by test: the report's best, its re-run command and its best
    # run follow validation; ranking by test_acc on request is labelled biased
    for run, (val, test) in {"0": (0.99, 0.50), "1": (0.98, 0.51), "2": (0.60, 0.97), "3": (0.61, 0.98)}.items():
        rewrite(sweep / run, best_val_acc=val, test_acc=test)
    p = report(sweep, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    text = (sweep / "report.md").read_text()
    assert pd.read_csv(sweep / "comparison.csv").optimizer[0] == "adam" and "biased" not in text
    assert "optimizer=adam seed=0,1" in text and f"`{sweep / '0'}`: val_acc 0.99" in text
    p = report(sweep, "--metric", "test_acc", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    own = sweep / "reports" / "by_default_test_acc"
    text = (own / "report.md").read_text()
    assert pd.read_csv(own / "comparison.csv").optimizer[0] == "sgd"
    assert "Ranked by `test_acc` on request: biased." in text
    assert "optimizer=adam seed=0,1" in text  # still re-runs the validation winner
    assert (sweep / "report.md").read_text().startswith("# Sweep report: val_acc")  # the sweep's own is left alone


def test_runs_still_improving_at_max_epochs_are_flagged(grid):
    sweep, p = grid
    summary = pd.read_csv(sweep / "summary.csv")
    improving = (summary.stop_reason == "max_epochs") & (summary.best_epoch == summary.epochs_run)
    assert summary.still_improving.tolist() == improving.tolist() and improving.any()  # 3 epochs is too few
    assert f"Warning: {improving.sum()} of 4 runs were still improving at max_epochs" in p.stdout
    assert "raise epochs" in (sweep / "report.md").read_text()
    assert pd.read_csv(sweep / "comparison.csv").n_still_improving.sum() == improving.sum()


def test_several_sweeps_with_different_settings_are_not_pooled(grid, tmp_path):
    other = tmp_path / "short"
    p = app("-m", "data=digits", "epochs=1", "optimizer=adam,sgd", "seed=0,1", f"hydra.sweep.dir={other}", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    p = report(grid[0], other, "--by", "optimizer", "--out", tmp_path / "both", cwd=tmp_path)
    assert p.returncode == 2
    [line] = p.stderr.strip().splitlines()
    assert line.startswith("error: the sweeps differ in epochs (epochs: 3 vs 1)") and "--by optimizer,epochs" in line
    p = report(grid[0], other, "--by", "optimizer,epochs", "--out", tmp_path / "both", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    comparison = pd.read_csv(tmp_path / "both" / "comparison.csv")
    assert len(comparison) == 4 and "sweep" not in comparison.columns  # the sweeps themselves are no factor
    assert set(comparison.epochs) == {1, 3}
    # the same experiment twice pools: no setting differs
    p = report(grid[0], copy(grid, tmp_path), "--out", tmp_path / "same", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert pd.read_csv(tmp_path / "same" / "comparison.csv").n_runs.tolist() == [4, 4]


def test_mixed_keys_a_corrupt_result_and_stale_files(grid, tmp_path):
    sweep = copy(grid, tmp_path)
    (sweep / "slices.png").write_bytes(PNG)  # left by an earlier report: must not survive a new one
    overrides = (
        sweep / "1" / ".hydra" / "overrides.yaml"
    )  # one run with an extra key, as a resume with one more override
    overrides.write_text(yaml.safe_dump(yaml.safe_load(overrides.read_text()) + ["dropout=0.3"]))
    (sweep / "3" / "result.json").write_text('{"status": "compl')
    p = report(sweep, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    summary = pd.read_csv(sweep / "summary.csv").set_index("run")
    assert summary.loc[3, "status"] == "incomplete" and str(sweep / "3" / "result.json") in summary.loc[3, "error"]
    assert summary.dropout.isna().sum() == 3
    assert not (sweep / "slices.png").exists()
    assert "| 3 | incomplete |" in (sweep / "report.md").read_text()


def test_another_by_gets_its_own_folder_and_a_read_only_sweep_reports_elsewhere(grid, tmp_path):
    sweep = copy(grid, tmp_path)
    before = (sweep / "report.md").read_text()
    p = report(sweep, "--by", "seed", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert (sweep / "report.md").read_text() == before
    assert (sweep / "reports" / "by_seed_val_acc" / "report.md").exists()


def test_a_read_only_sweep_dir_reports_with_out(grid, tmp_path, monkeypatch, capsys):
    from pathlib import Path

    from sweep import report as report_module

    sweep = copy(grid, tmp_path)
    before = {p.name: p.read_bytes() for p in sweep.iterdir() if p.is_file()}
    real_access = os.access  # chmod does not stop root, who runs CI: the check is what is tested
    monkeypatch.setattr(report_module.os, "access", lambda p, mode: Path(p) != sweep and real_access(p, mode))
    with pytest.raises(SystemExit) as e:
        report_module.main([str(sweep)])
    assert e.value.code == 2
    assert capsys.readouterr().err.startswith(f"error: SWEEP_DIR={sweep}: not writable; give --out")
    assert report_module.main([str(sweep), "--out", str(tmp_path / "elsewhere")]) == 0
    assert (tmp_path / "elsewhere" / "report.md").exists() and (tmp_path / "elsewhere" / "comparison.csv").exists()
    assert {p.name: p.read_bytes() for p in sweep.iterdir() if p.is_file()} == before  # nothing written there


def test_an_interrupted_sweep_is_reported_with_its_incomplete_run(grid, tmp_path):
    sweep = copy(grid, tmp_path)
    (sweep / "3" / "result.json").unlink()  # killed before it finished
    p = report(sweep, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    comparison = pd.read_csv(sweep / "comparison.csv")
    assert comparison.n_runs.sum() == 4 and comparison.n_completed.sum() == 3


def test_a_study_that_cannot_be_opened_is_one_warning_and_the_report_goes_on(grid, tmp_path):
    sweep = copy(grid, tmp_path)
    (sweep / "study.json").write_text('{"storage": "mysql://nobody@127.0.0.1:1/none", "name": "gone"}')
    p = report(sweep, cwd=tmp_path)  # a server the sweep dir names is not opened on its word
    assert p.returncode == 0, p.stderr
    [line] = p.stderr.strip().splitlines()
    assert line.startswith(f"warning: {sweep / 'study.json'} names the study storage mysql://") and "--storage" in line
    p = report(sweep, "--storage", "mysql://nobody@127.0.0.1:1/none", cwd=tmp_path)  # named by the user: tried
    assert p.returncode == 0, p.stderr
    [line] = p.stderr.strip().splitlines()
    assert line.startswith("warning: the study 'gone' at mysql://") and "could not be opened" in line


def test_an_unknown_key_is_one_line(grid, tmp_path):
    p = report(grid[0], "--by", "activation", "--out", tmp_path, cwd=tmp_path)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    [line] = p.stderr.strip().splitlines()
    assert line.startswith("error: --by=activation:") and "optimizer" in line
    p = report(tmp_path / "nowhere", cwd=tmp_path)
    assert p.returncode == 2 and p.stderr.startswith("error: SWEEP_DIR=")


def test_an_optuna_search_report_reads_well(tmp_path):
    sweep = tmp_path / "s"
    p = app("-m", "search=optuna", "data=digits", "epochs=2", "hydra.sweeper.n_trials=8", f"hydra.sweep.dir={sweep}",
            cwd=tmp_path)  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    comparison = pd.read_csv(sweep / "comparison.csv")
    assert len(comparison) == 8 and list(comparison.columns[:5]) == ["trial", "state", "lr", "batch_size", "dropout"]
    text = (sweep / "report.md").read_text()
    assert "## Top trials" in text and "does not test differences between settings" in text
    assert "Is the difference real?" not in text  # no verdicts per 17-digit float
    for png in ("slices.png", "optimization_history.png", "param_importances.png", "learning_curves.png"):
        assert (sweep / png).read_bytes()[:8] == PNG
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())["best_trial"]
    assert comparison.trial[0] == best["number"]  # the report's best is the study's best
    assert f"`{sweep / best['run_dir']}`" in text


def test_a_resumed_search_with_one_more_override_reports(tmp_path):
    """The extra key is empty for the older trials: the slices plot mixed text and numbers."""
    sweep = tmp_path / "s"
    args = ("-m", "search=optuna", "data=synthetic", "epochs=2", f"hydra.sweep.dir={sweep}")
    assert app(*args, "hydra.sweeper.n_trials=2", cwd=tmp_path).returncode == 0
    p = app(*args, "hydra.sweeper.n_trials=1", "patience=1", cwd=tmp_path)
    assert p.returncode == 0 and "Traceback" not in p.stderr and "Error" not in p.stderr, p.stderr[-3000:]
    assert (sweep / "slices.png").read_bytes().startswith(PNG)
    p = report(sweep, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]


@pytest.mark.parametrize(
    "ref",
    [
        '{"storage": "sqlite:///{tmp}/created.db", "name": "x"}',
        '{"storage": "journal://{tmp}/created.log", "name": "x"}',
        '{"storage": "postgresql://user@127.0.0.1:1/db", "name": "x"}',
        '{"storage": "sqlite:///created-here.db", "name": "x"}',
        "{not json",
        "[1, 2]",
        '{"storage": 5}',
    ],
)
def test_a_crafted_study_json_opens_nothing_outside_the_sweep_dir(tmp_path, ref, monkeypatch):
    from sweep.summary import build_summary

    sweep = tmp_path / "sweep"
    (sweep / "0" / ".hydra").mkdir(parents=True)
    (sweep / "study.json").write_text(ref.replace("{tmp}", str(tmp_path)))
    connected = []
    monkeypatch.setattr("sweep.search.study.open_storage", lambda *a, **k: connected.append(a))
    before = set(tmp_path.rglob("*"))
    for command in (lambda: report(sweep, cwd=tmp_path), lambda: build_summary(sweep)):
        result = command()
        assert getattr(result, "returncode", 0) == 0 and "Traceback" not in getattr(result, "stderr", "")
    assert connected == []  # no storage was opened
    written = {p.name for p in set(tmp_path.rglob("*")) - before}
    assert written <= {"summary.csv", "report.md", "comparison.csv", "learning_curves.png", "all"}, written


def test_values_from_run_dirs_are_shown_literally_in_report_md(grid, tmp_path):
    """A crafted override value cannot shift a table's columns, add HTML, or break out of the
    re-run command's code block; an added key keeps its `+` in the re-run command."""
    sweep = copy(grid, tmp_path)
    evil = "adam|x<script>alert(1)</script>```\n# owned"
    for run in ("0", "1"):  # both seeds of adam, the better optimizer
        path = sweep / run / ".hydra" / "overrides.yaml"
        path.write_text(path.read_text().replace("optimizer=adam", f"optimizer={json.dumps(evil)}") + "- +debug=tiny\n")
        overrides = yaml.safe_load(path.read_text())
        result = json.loads((sweep / run / "result.json").read_text())
        (sweep / run / "result.json").write_text(json.dumps(result | {"overrides": overrides, "best_val_acc": 0.99}))
    p = report(sweep, "--by", "optimizer", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    text = (sweep / "reports" / "by_optimizer_val_acc" / "report.md").read_text()
    import re

    prose = re.sub(r"(`+).*?\1", "", re.sub(r"(?ms)^(`{3,}).*?^\1$", "", text))  # code shows HTML as text
    assert "<script>" not in prose and "&lt;script&gt;" in prose
    table = [line for line in text.split("## Comparison")[1].split("##")[0].splitlines() if line.startswith("|")]
    assert len({line.replace("\\|", "").count("|") for line in table}) == 1  # every row has the header's columns
    assert "# owned" not in [line.strip() for line in text.splitlines()]  # no line of the value's own
    rerun = text.split("## Re-run the best setting")[1].split("\n## ")[0]
    assert "+debug=tiny" in rerun and rerun.count("````") == 2  # a fence the value's ``` cannot close


def test_odd_sweep_files_are_warnings_not_tracebacks(grid, tmp_path):
    sweep = copy(grid, tmp_path)
    (sweep / "multirun.yaml").write_text("hydra: [unclosed")
    (sweep / "1" / ".hydra" / "overrides.yaml").write_text("{not: [yaml")
    for run in ("2", "3"):  # a key named like one of the comparison's own columns
        path = sweep / run / ".hydra" / "overrides.yaml"
        path.write_text(path.read_text() + "- +note=x\n")
        result = json.loads((sweep / run / "result.json").read_text())
        (sweep / run / "result.json").write_text(json.dumps(result | {"overrides": yaml.safe_load(path.read_text())}))
    p = report(sweep, cwd=tmp_path)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert f"{sweep / 'multirun.yaml'}: unreadable" in p.stderr and f"{sweep / '1' / '.hydra'}" in p.stderr
    assert "override:note" in pd.read_csv(sweep / "summary.csv").columns
    (tmp_path / "afile").write_text("x")
    p = report(sweep, "--out", tmp_path / "afile", cwd=tmp_path)
    assert p.returncode == 2 and p.stderr == f"error: --out={tmp_path / 'afile'}: is a file; give a folder\n"


def test_the_headline_answers_each_level_at_its_best_setting_before_the_averaged_effect(tmp_path):
    from sweep.comparison import compare
    from sweep.report import markdown
    from sweep.summary import Sweep

    # sgd at lr=1e-3 still learning (poor), at 1e-2 as good as adam at its best
    values = {("adam", "0.001"): (0.955, 0.96, 0.95), ("adam", "0.01"): (0.94, 0.95, 0.945),
              ("sgd", "0.001"): (0.80, 0.82, 0.81), ("sgd", "0.01"): (0.96, 0.94, 0.953)}  # fmt: skip
    rows, overrides = [], []
    for (optimizer, lr), accs in values.items():
        for seed, acc in enumerate(accs):
            rows.append({"run": len(rows), "optimizer": optimizer, "lr": float(lr), "seed": seed, "status": "completed",
                         "best_val_acc": acc, "test_acc": acc, "best_epoch": 3, "train_time_s": 1.0,
                         "still_improving": False})  # fmt: skip
            overrides.append([f"optimizer={optimizer}", f"lr={lr}", f"seed={seed}"])
    sweep = Sweep(tmp_path, pd.DataFrame(rows), [tmp_path / str(i) for i in range(len(rows))], overrides)
    text = markdown(compare([sweep]), [], [])
    headline, averaged = text.split("### Each level at its best setting of the others")[1].split(
        "### Averaged over the other keys"
    )
    assert "picked on these same runs" in headline
    assert "- **optimizer** (each level at its best setting of the others" in headline
    assert "`adam` at lr=0.001 has the best mean val_acc, 0.955 (n = 3)" in headline
    assert "against `sgd` at lr=0.01 (0.951, n = 3): ahead by 0.004" in headline and "within noise" in headline
    assert "paired over 3 runs matched on seed" in headline
    assert "- **optimizer** (averaged over lr: each level's runs at every value of them)" in averaged
    assert "matched on lr, seed" in averaged


@pytest.mark.slow
def test_a_grid_over_model_widths_reports_accuracy_against_latency(tmp_path):
    """Every run records its latency; the report puts the settings' means on a front and says
    which is the cheapest within noise of the most accurate, or that none is."""
    sweep = tmp_path / "s"
    p = app("-m", "data=digits", "epochs=2", "model=mlp", "model.hidden=[256,256],[8]", "seed=0,1,2",
            f"hydra.sweep.dir={sweep}", cwd=tmp_path)  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    text = (sweep / "report.md").read_text()
    section = text.split("## Accuracy against latency")[1].split("\n## ")[0]
    assert "| model.hidden | n | val_acc | latency_ms | on the front | dominated by | beyond noise |" in section
    assert (
        "is within noise of the most accurate" in section
        or "No setting cheaper beyond noise than the most accurate" in section
    )
    summary = pd.read_csv(sweep / "summary.csv")
    assert {"parameters", "model_bytes", "macs", "latency_ms", "latency_ms_b64"} <= set(summary.columns)
