"""Comparison report: `python sweep/report.py SWEEP_DIR [SWEEP_DIR ...] [--by KEY[,KEY]] [--metric val_acc]`.

Rebuilds each sweep's summary.csv from its run dirs (so interrupted sweeps work too), then writes
comparison.csv, report.md and PNG plots: which setting is better, by how much, and whether the
difference is outside noise. The sweep's validation objective ranks and selects; test metrics
are the held-out estimate of what was selected. In three steps over the built summaries:
compare (statistics), draw (plots), write (the Markdown).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)  # as in run.py

import pandas as pd  # noqa: E402

from sweep.comparison import Comparison, compare, report_metric  # noqa: E402
from sweep.errors import UserError, exit_with  # noqa: E402
from sweep.files import atomic_write  # noqa: E402
from sweep.outcomes import METRICS, Status  # noqa: E402
from sweep.search.sequential import FRIEDMAN_FROM  # noqa: E402
from sweep.statistics import ALPHA, Contrast, FactorVerdict  # noqa: E402
from sweep.summary import Sweep, best_run, build_summary, find_runs, param_columns, still_improving_line  # noqa: E402
from sweep.text import code, code_block  # noqa: E402
from sweep.text import markdown as md  # noqa: E402

COMPARISON_FILE, REPORT_FILE = "comparison.csv", "report.md"
# What a report writes, so that a new report into the same folder leaves none of an old one's.
REPORT_GLOBS = (
    COMPARISON_FILE,
    REPORT_FILE,
    "learning_curves.png",
    "*_by_level.png",
    "*optimization_history.png",
    "*param_importances.png",
    "*slices.png",
    "best_run_*.png",
)
TOP_TRIALS = 10


def draw(c: Comparison, out: Path) -> tuple[list[Path], list[Path]]:
    """The plots step: learning curves, the metric per level (or, for a search, the objective by
    parameter), each search's history and importances; then the best run's own pictures."""
    from sweep import plots

    if c.race is not None:  # a race's runs by how their setting ended
        survived = c.runs.assign(race=c.runs.eliminated_after.isna().map({True: "survived", False: "eliminated"}))
        pngs = [plots.learning_curves(survived, ["race"], out / "learning_curves.png", palette=plots.RACE_COLOURS)]
    else:
        pngs = [plots.learning_curves(c.runs, c.keys, out / "learning_curves.png", colour_by=c.objective.column)]
    if c.search:
        params = [p for p in param_columns(c.runs) if p not in ("trial", "seed")]
        scales = {k: v for s in c.sweeps if s.study is not None for k, v in plots.log_scales(s.study).items()}
        pngs.append(plots.slices(c.runs, params, c.objective.column, out / "slices.png", scales or None))
    else:
        pngs.append(plots.metric_by_level(c.table, c.shown_keys, c.metric.name, out / f"{c.metric.name}_by_level.png"))
    if c.tradeoff is not None:
        pngs.append(plots.tradeoff(c.tradeoff, c.objective.name, c.tradeoff.cost, out / "tradeoff.png"))
    for sweep in c.sweeps:
        prefix = f"{sweep.dir.name}_" if len(c.sweeps) > 1 else ""
        if sweep.study is not None and len(sweep.study.directions) > 1:
            if c.tradeoff is None:  # another app's objectives; this project's have the tradeoff's picture
                pngs.append(plots.pareto_front(sweep.study, out / f"{prefix}pareto_front.png"))
        elif sweep.study is not None:
            pngs += [
                plots.optimization_history(sweep.study, out / f"{prefix}optimization_history.png"),
                plots.param_importances(sweep.study, out / f"{prefix}param_importances.png"),
            ]
    best = plots.run_pictures(Path(c.best_run.run_dir), out, "best_run_") if c.best_run is not None else []
    return [p for p in pngs if p is not None], best


def _shown(c: Comparison, table: pd.DataFrame) -> pd.DataFrame:
    """A comparison table as the report shows it: another app's runs have no epochs to count."""
    training = ["mean_best_epoch", "n_still_improving", "mean_train_time_s"]
    return table.drop(columns=training) if c.objective.column == "value" else table


def markdown_table(table: pd.DataFrame) -> str:
    """A Markdown table whose every cell shows its value literally: values come from run dirs and
    overrides, which must not shift the columns or add HTML to report.md."""

    def cell(v: object) -> str:
        return "–" if pd.isna(v) or v == "" else f"{v:.4g}" if isinstance(v, float) else md(v)

    lines = ["| " + " | ".join(map(md, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- verdicts in words


def _at(v: FactorVerdict, level: object) -> str:
    setting = v.settings.get(level, {})
    return f" at {', '.join(f'{md(k)}={md(x)}' for k, x in setting.items())}" if setting else ""


def verdict_lines(v: FactorVerdict, metric: str) -> list[str]:
    """A factor's verdict as Markdown list items, contrasts nested; levels and keys (others' values)
    shown literally."""
    mean = f"{v.best_mean:.4g} (n = {v.best_n})"
    best = f"{code(v.best)}{_at(v, v.best)} has the best mean {metric}, {mean}."
    if v.settings:
        how = ("each level at its best setting of the others, picked on these same runs (so each lead is "
               "the most the level can show here, and the best level's a little optimistic)")  # fmt: skip
    elif v.averaged_over:
        how = f"averaged over {', '.join(map(md, v.averaged_over))}: each level's runs at every value of them"
    else:
        how = ""
    lines = [f"- **{md(v.factor)}**{f' ({how})' if how else ''}: {best}"]
    for c in v.contrasts:
        lines.append(f"  - against {code(c.level)}{_at(v, c.level)} ({c.mean:.4g}, n = {c.n}): "
                     + _contrast_words(c, v, bounded=metric in BOUNDED))  # fmt: skip
    return lines


BOUNDED = ("val_acc", "test_acc", "test_macro_f1")  # in [0, 1]: a difference of two lies in [-1, 1]


def _contrast_words(c: Contrast, v: FactorVerdict, bounded: bool = False) -> str:
    if c.test == "":
        return (
            f"ahead by {c.lead:.4g}, but with fewer than 2 completed runs on a side there is no telling it from "
            "noise: repeat the runs over seeds (`seed=0,1,2`)."
        )
    how = (
        f"paired over {c.n_pairs} runs matched on {', '.join(map(md, v.matched_on))}"
        if c.n_pairs
        else "Welch's t-test, runs unpaired"
        + (f", averaged over {', '.join(map(md, v.averaged_over))}" if v.averaged_over else "")
    )
    if c.test == "no spread":
        if c.lead == 0:
            return f"a tie: every one of the {c.n_pairs} matched runs gave the same value ({how})."
        return (
            f"ahead by exactly {c.lead:.4g} in each of the {c.n_pairs} matched runs, with no spread to measure "
            f"noise by ({how}); the seeds vary nothing here: set `split_per_seed=true` so that repeats also "
            "resample the validation split."
        )
    if bounded and (c.ci_low < -1 or c.ci_high > 1):  # an interval wider than the metric allows tells nothing
        return (
            f"ahead by {c.lead:.4g}, but the sample is too small to tell ({how}): a 95% interval from so few runs "
            "spans more than any difference of two scores in [0, 1] can; repeat the runs over more seeds."
        )
    if c.lead == 0:
        return f"a tie, difference 0 (95% CI {c.ci_low:.3g} to {c.ci_high:.3g}; {how})."
    verdict = (
        f"outside noise (Holm-adjusted p = {c.p_holm:.3g} < {ALPHA})"
        if c.real
        else f"within noise (Holm-adjusted p = {c.p_holm:.3g}); more seeds would tell"
    )
    return f"ahead by {c.lead:.4g} (95% CI {c.ci_low:.3g} to {c.ci_high:.3g}; {how}): {verdict}."


# ----------------------------------------------------------------------------- report.md


def _search_text(c: Comparison) -> list[str]:
    states = c.runs.drop_duplicates("trial")["state"].value_counts().to_dict() if "state" in c.runs else {}
    pruned = c.runs[c.runs.status == Status.PRUNED]
    # completed trials: a pruned one's value is not a final one, nor one that raced out over fewer seeds
    ranked = c.table[c.table["mean"].notna() & (c.table.get("state", pd.Series(index=c.table.index)) != "PRUNED")]
    unranked = len(c.table) - len(ranked)
    text = _confirm_text(c) + [
        "## Top trials",
        "",
        f"The {min(TOP_TRIALS, len(ranked))} best of {len(ranked)} completed trials by "
        f"{c.metric.name} (mean over a trial's seeds; trial states: "
        f"{', '.join(f'{n} {s}' for s, n in states.items())}"
        + (f"; the {unranked} others are not ranked" if unranked else "")
        + "):",
        "",
        markdown_table(_shown(c, ranked.head(TOP_TRIALS))),
        "",
    ]
    if not pruned.empty:
        epochs = ", ".join(str(int(e)) for e in sorted(pruned.epochs_run.dropna().unique()))
        text += [
            f"{len(pruned)} runs were pruned, after {epochs} epochs; their metrics are those of the epochs "
            "they ran and they are not ranked above.",
            "",
        ]
    text += _front_text(c)
    if c.confirmation is None:
        text += [
            "A search samples each setting once (or `repeats` times), so it does not test differences between "
            "settings: it finds promising ones. To tell whether the best beats another, re-run both over seeds "
            "with a grid (`seed=0,1,2`) and report that.",
            "",
        ]
    return text


def _confirm_text(c: Comparison) -> list[str]:
    """A search's answer: its leading settings raced over seeds, and the one it names."""
    if c.confirmation is None:
        return []
    from sweep.search.confirm import verdict

    race, name = c.confirmation.race, c.objective.name
    v = verdict(race)
    seeds = f"seeds {race.seed}..{race.seed + race.rounds - 1}"
    text = [
        "## The search's answer",
        "",
        f"The search's {len(race.entries)} leading settings (by their mean {name} over the seeds they ran) raced "
        f"over {seeds}, reusing the runs they had and training the others: from {race.min_seeds} seeds on, each "
        f"was compared with the leader, paired by seed and one-sided, at the level {race.level:.2g} every look uses "
        f"(set so that identical settings are told apart in at most {race.alpha:.0%} of races). A single trial's "
        "value is one seed's; the luckiest one is not the answer.",
        "",
        markdown_table(c.confirm_table),
        "",
    ]
    if v is None:
        return text + ["No leading setting completed a run: nothing is confirmed.", ""]
    trial = c.confirm_table.iloc[0]["trial"]
    interval = f"{v.mean:.4g} (95% interval {v.low:.4g}..{v.high:.4g}) over {len(v.pick.values)} seeds"
    lucky, searched = [], c.runs.loc[c.runs.run.str.startswith("trial_")]
    if (best := best_run(searched, c.objective.name)) is not None:
        row = searched.loc[best]
        lucky = [f"The luckiest single run of the search, {code(row.run)} ({name} {row[c.objective.column]:.4g}), "
                 "is one seed's value, not the answer.", ""]  # fmt: skip
    if v.confirmed:
        return text + [f"**Confirmed: trial {trial}'s setting**, {name} {interval}, ahead of every other leading "
                       "setting beyond seed noise.", ""] + lucky  # fmt: skip
    tied = ", ".join(str(t) for t in c.confirm_table[c.confirm_table.outcome.isin(["leads", "survived"])]["trial"])
    return text + [f"**Not distinguishable: the settings of trials {tied}** could not be told apart over "
                   f"{race.rounds} seeds. The pick, trial {trial}'s, has the best mean, {name} {interval}; more "
                   "seeds (`hydra.sweeper.confirm_budget`) may tell them apart.", ""] + lucky  # fmt: skip


def _front_text(c: Comparison) -> list[str]:
    """A study with several objectives: its non-dominated trials, each objective's value."""
    study = next((s.study for s in c.sweeps if s.study is not None and len(s.study.directions) > 1), None)
    if study is None or c.tradeoff is not None:  # this project's objectives: the tradeoff's section says more
        return []
    front = sorted(study.best_trials, key=lambda t: t.values[0])
    words = ", ".join(f"objective {i} {d.name.lower()}d" for i, d in enumerate(study.directions))
    table = pd.DataFrame([{"trial": t.number, **t.params, **{f"value_{i}": v for i, v in enumerate(t.values)}}
                          for t in front])  # fmt: skip
    return ["## The Pareto front", "",
            f"The {len(front)} trials no other trial beats on every objective ({words}); the ranking above is by "
            "objective 0 alone.", "", markdown_table(table), ""]  # fmt: skip


# each cost a tradeoff may be against: its heading word, its unit, and how it was measured
COST_WORDS = {
    "latency_ms": ("latency", "ms an image",
                   "latency per image (batch 1, on the CPU that trained it, as `sweep-serve` runs the model)"),
    "latency_ms_b64": ("latency", "ms an image",
                       "latency per image in a batch of 64 (on the CPU that trained it, as `sweep-serve` runs it)"),
    "model_bytes": ("size", "bytes", "size of `best.pt`"),
    "parameters": ("parameters", "parameters", "parameter count"),
    "macs": ("multiply-accumulates", "MACs an image", "multiply-accumulates per image (counted by torch)"),
}  # fmt: skip


def _tradeoff_text(c: Comparison) -> list[str]:
    """The settings' objective against a cost: the front, each dominated setting's verdict, and the
    cheapest setting within noise of the most accurate."""
    t = c.tradeoff
    if t is None:
        return []
    name, pts = c.objective.name, t.points
    word, unit, measured = COST_WORDS[t.cost]

    def said(i: int) -> str:
        return " ".join(f"{k}={v}" for k, v in pts[i].setting.items())

    def label(i: int) -> str:
        return code(said(i))

    rows = [{**p.setting, "n": p.n, name: p.objective, t.cost: p.cost, "on the front": "yes" if p.on_front else "",
             "dominated by": "" if p.dominated_by is None else said(p.dominated_by),
             "beyond noise": "" if p.dominated_by is None else ("yes" if p.beyond_noise else "no, within noise")}
            for p in pts]  # fmt: skip
    if t.cheap is None:
        head = f"No setting cheaper beyond noise than the most accurate, {label(0)}, is within noise of its {name}."
    else:
        gap = pts[t.cheap].objective - pts[0].objective
        head = (f"**{label(t.cheap)} is within noise of the most accurate ({name} {gap:+.4f} against {label(0)}) at "
                f"{pts[0].cost / pts[t.cheap].cost:.1f}x lower {word}** ({pts[t.cheap].cost:.3g} {unit} against "
                f"{pts[0].cost:.3g}).")  # fmt: skip
    return [
        "", f"## Accuracy against {word}", "",
        f"Each setting's mean {name} and mean {measured} over its seeds. On the front: no other setting is better "
        "on both means. A setting off it is dominated by the most accurate setting on the front that beats it "
        "on both; *beyond noise* when, on each criterion where that one is better, it is significantly better "
        "(paired by seed, one-sided t-tests, Holm-adjusted over the dominated settings, "
        f"{ALPHA:.0%} level): otherwise it is beaten on the means only.",
        "", head, "", markdown_table(pd.DataFrame(rows)),
    ]  # fmt: skip


def _race_verdict(c: Comparison) -> str:
    """A race's one verdict a pair, its own: no fixed-sample test on seeds gathered sequentially."""
    race = c.race
    if race.cost is not None:
        return (
            f"The race's own rule decides (paired by seed, at the level every look uses, set for the whole race): an "
            f"eliminated setting was dominated beyond noise on {c.objective.name} and {race.cost} when it went (the "
            "race table says by which setting); the survivors were not, at the seeds they ran. A fixed-sample test on "
            "these same seeds would claim more than they show, as the race chose which seeds each setting got."
        )
    return (
        f"Over the settings still in the race at its end, and those it eliminated, the race's own rule decides "
        f"(paired by seed, at the level {race.level:.2g} every look uses, set for the whole race): an eliminated "
        "setting was significantly behind the leader when it went (the race table says by how much); the "
        f"survivors could not be told apart from the leader at {race.rounds} seeds. Survived means that, not "
        "distinguishable from the leader, and not better than an eliminated setting: two survivors, or a survivor "
        "and an eliminated setting, were never compared with each other. A fixed-sample test on these same seeds "
        "would claim more than they show, as the race chose which seeds each setting got; to compare survivors "
        "with each other, run them again over fresh seeds (`seed=...`)."
    )


def _race_text(c: Comparison) -> list[str]:
    race = c.race
    full = len(race.entries) * race.max_seeds
    test = {"t": "a paired t-test", "friedman": "Friedman's rank test (Conover's post-hoc)",
            "wilcoxon": "Wilcoxon's signed-rank test",
            "auto": f"Friedman's rank test (Conover's post-hoc) while {FRIEDMAN_FROM} or more settings were left and a "
                    "paired t-test after"}[race.test]  # fmt: skip
    own = " (the t-test at its own level, set the same way)" if race.test == "auto" else ""
    rule = (
        f"each was compared with the leader (the best mean over the seeds all survivors ran) by {test}, one-sided and "
        f"paired by seed, p-values Holm-adjusted within the round; a setting whose adjusted p was below "
        f"{race.level:.2g}{own} trained no more seeds"
        if race.cost is None
        else f"a setting that another dominated on the means of {c.objective.name} and {race.cost} went when that "
        f"held beyond noise: on each criterion where the other was better, significantly (paired by seed, one-sided, "
        f"{'Wilcoxon' if race.pair_test == 'wilcoxon' else 't-test'}; the larger p, Holm-adjusted within the round, "
        f"below {race.level:.2g})"
    )  # fmt: skip
    text = [
        "## The race",
        "",
        f"{len(race.entries)} settings raced over seeds {race.seed}..{race.seed + race.max_seeds - 1}, one a round: "
        f"from {race.min_seeds} seeds on, {rule}. That level is the same at every "
        f"look, set so that a race among identical settings eliminates any in at most {race.alpha:.0%} of races (by "
        f"simulation). A failed or diverged run eliminates its setting, and so does a run stopped mid-way because "
        "even the fastest gain any run had shown would leave it behind the leader's run at the same seed. "
        f"The race took {race.runs} of the {full} runs "
        f"the full grid over {race.max_seeds} seeds would ({race.runs / full:.0%}), over {race.rounds} rounds.",
        "",
        markdown_table(c.race_table),
        "",
    ]
    alive = race.survivors
    leader = race.leader()
    if race.cost is not None and len(alive) > 1:
        names = ", ".join(code(race.label(e)) for e in alive)
        text += [f"**{len(alive)} settings are left, none dominated beyond noise:** {names}; the accuracy against "
                 f"{race.cost} below says what each costs.", ""]  # fmt: skip
    elif len(alive) == 1 and leader is not None:
        text += [f"**Winner: {code(race.label(leader))}**, {c.objective.name} {leader.mean():.4g} over "
                 f"{len(leader.values)} seeds: every other setting was eliminated.", ""]  # fmt: skip
    elif alive:
        names = ", ".join(code(race.label(e)) for e in alive)
        text += [f"**{len(alive)} settings are not distinguishable at {race.rounds} seeds:** {names}. The leader, "
                 f"{code(race.label(leader))}, is ahead by less than the race could tell apart.", ""]  # fmt: skip
    else:
        text += ["**Every setting was eliminated by a failed or diverged run.**", ""]
    return text


def markdown(c: Comparison, pngs: list[Path], best_pngs: list[Path]) -> str:
    """report.md's text."""
    counts = c.runs.status.value_counts().to_dict()
    better = "higher" if c.metric.higher_is_better else "lower"
    text = [
        f"# Sweep report: {c.metric.name}",
        "",
        f"Sweeps: {', '.join(code(s.dir) for s in c.sweeps)}. Runs: {len(c.runs)} "
        f"({', '.join(f'{n} {s}' for s, n in counts.items())}). Metric: `{c.metric.column}` ({better} is better), "
        "over completed runs; intervals are t-distribution 95% CIs of the mean. "
        + (
            f"The sweep's objective, `{c.objective.name}` (validation), selects; test metrics only report."
            if c.objective.column != "value"
            else f"The sweep's objective, `{c.objective.name}`, is what the task returned; it selects."
        ),
        "",
    ]
    if c.biased:
        text += [
            f"**Ranked by `{c.metric.name}` on request: biased.** Ranking by the test split makes it a selection "
            "set, so the winner's test value overstates what it will do on new data; rank by "
            f"`{c.objective.name}` for an honest choice.",
            "",
        ]
    if line := still_improving_line(c.runs):
        text += [f"**Warning:** {line} Their numbers understate what their settings can do.", ""]
    text += (_search_text(c) if c.search else _comparison_text(c)) + _tradeoff_text(c)
    if c.rerun:
        text += ["", f"## Re-run the best setting (by {c.objective.name})", "", *code_block(c.rerun, "bash")]
    text += ["", "## Plots", ""] + [_picture(p) for p in pngs]
    text += _best_run_text(c, best_pngs)
    incomplete = c.runs[c.runs.status.isin([Status.INCOMPLETE, Status.FAILED])]
    if not incomplete.empty:
        text += ["", "## Runs without a result", "", markdown_table(incomplete[["run", "status", "error"]].fillna(""))]
    return "\n".join(text) + "\n"


def _comparison_text(c: Comparison) -> list[str]:
    """A grid's (or race's) comparison table and its verdicts: each level at its best setting of the
    others first, then each factor averaged over the others."""
    text = _race_text(c) if c.race is not None else []
    text += ["## Comparison", "", markdown_table(_shown(c, c.table)), "", "## Is the difference real?", ""]
    if c.race is not None:
        return text + [_race_verdict(c), ""]
    if c.best_verdicts:
        text += [
            "### Each level at its best setting of the others",
            "",
            "The question a sweep asks of a factor: is its best level better than each other level, each at "
            "its own best setting of the other swept keys? Runs paired by seed (a paired t-test; Welch's "
            f"t-test where they cannot be paired), p-values Holm-adjusted over each factor's comparisons, at "
            f"the {ALPHA:.0%} level. The best settings were picked on these same runs.",
            "",
        ]
        for v in c.best_verdicts:
            text += verdict_lines(v, c.metric.name)
        for key, table in c.at_best.items():
            text += ["", f"Each {code(key)} at its best setting of the others:", "", markdown_table(table)]
        text += ["", "### Averaged over the other keys", ""]
    if not c.verdicts:
        return text + ["- Only one level was compared: nothing to tell apart."]
    text += [
        "Each factor's best level against every other level over all its runs, averaged over the other "
        "swept keys (a main effect: a level that is poor at one setting of them loses here even where it "
        "is as good at its best), pairing runs that share every other swept value and the seed where they "
        "can be paired (a paired t-test) and Welch's t-test otherwise; p-values are Holm-adjusted over each "
        f"factor's comparisons, at the {ALPHA:.0%} level.",
        "",
    ]
    for v in c.verdicts:
        text += verdict_lines(v, c.metric.name)
    return text


def _best_run_text(c: Comparison, best_pngs: list[Path]) -> list[str]:
    if c.best_run is None:
        return []
    o = c.objective
    return [
        "",
        "## The best run",
        "",
        f"{code(c.best_run.run_dir)}: {o.name} {c.best_run[o.column]:.4g}"
        + (
            "."
            if pd.isna(c.best_run.test_acc)
            else f", test_acc {c.best_run.test_acc:.4g} (selected by {o.name}; the test split only reports)."
        ),
        "",
    ] + [_picture(p) for p in best_pngs]


def _picture(png: Path) -> str:
    return f"![{md(png.stem)}]({quote(png.name)})"


def default_out(sweeps: list[Sweep], by: list[str] | None, metric_name: str | None) -> Path:
    """The sweep's own report lives in its dir; one for other keys or another metric gets its own
    folder beside it, so the two never overwrite each other; several sweeps' under outputs/reports/."""
    if len(sweeps) > 1:
        return Path("outputs/reports") / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    sweep = sweeps[0]
    if by is None and metric_name in (None, sweep.objective):
        return sweep.dir
    name = f"by_{'+'.join(by) if by is not None else 'default'}_{metric_name or sweep.objective}"
    return sweep.dir / "reports" / name


def write_report(
    sweeps: list[Sweep], by: list[str] | None = None, metric_name: str | None = None, out: Path | None = None
) -> Path:
    """Compare, draw and write comparison.csv, report.md and the plots into `out` (default: see
    `default_out`); return the report's path. An earlier report's files there are removed first."""
    c = compare(sweeps, by, metric_name)
    out = Path(out) if out else default_out(sweeps, by, metric_name)
    out.mkdir(parents=True, exist_ok=True)
    for pattern in REPORT_GLOBS:
        for old in out.glob(pattern):
            old.unlink()
    pngs, best_pngs = draw(c, out)
    buf = io.StringIO()
    c.table.to_csv(buf, index=False)
    atomic_write(out / COMPARISON_FILE, buf.getvalue())
    atomic_write(out / REPORT_FILE, markdown(c, pngs, best_pngs))
    return out / REPORT_FILE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python sweep/report.py", description=__doc__.splitlines()[0].split(": ")[1])
    parser.add_argument("sweep_dirs", nargs="*", type=Path, metavar="SWEEP_DIR")
    parser.add_argument("--by", help="KEY[,KEY]: the keys to compare (default: every swept key but seed)")
    parser.add_argument("--metric", help=f"one of {', '.join(METRICS)} (default: the sweep's objective)")
    parser.add_argument("--out", type=Path, help="where to write (default: the sweep dir, or a folder beside it)")
    parser.add_argument("--storage", metavar="URL", help="the study's storage, when it is not a file in the sweep dir")
    parser.add_argument("--run", type=Path, metavar="RUN_DIR", help="draw one run's pictures (into RUN_DIR or --out)")
    args = parser.parse_args(argv)
    if not args.sweep_dirs and not args.run:
        parser.error("give a SWEEP_DIR to report on, or --run RUN_DIR")
    try:
        if args.run:
            return _run_pictures(args.run, args.out)
        if args.metric:
            report_metric(args.metric)
        if args.out is not None and args.out.exists() and not args.out.is_dir():
            raise UserError(f"--out={args.out}: is a file; give a folder")
        sweeps = []
        for d in args.sweep_dirs:
            if not d.is_dir() or not find_runs(d):
                raise UserError(f"SWEEP_DIR={d}: no run dirs there (folders with a .hydra/ inside)")
            sweep = build_summary(d, args.storage)
            if os.access(d, os.W_OK):
                sweep.write()
            elif not args.out:
                raise UserError(f"SWEEP_DIR={d}: not writable; give --out DIR to write the report elsewhere")
            sweeps.append(sweep)
        by = args.by.split(",") if args.by else None
        path = write_report(sweeps, by, args.metric, args.out)
    except UserError as e:
        exit_with(e)
    print(path.read_text())
    print(f"Written: {path.parent / COMPARISON_FILE}, {path}, and plots in {path.parent}")
    return 0


def _run_pictures(run_dir: Path, out: Path | None) -> int:
    from sweep import plots
    from sweep.results import METRICS_FILE

    if not (run_dir / METRICS_FILE).exists():
        raise UserError(f"--run={run_dir}: no {METRICS_FILE} there; give a run dir (one with a result.json)")
    out = Path(out) if out else run_dir
    out.mkdir(parents=True, exist_ok=True)
    for png in plots.run_pictures(run_dir, out):
        print(f"Written: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
