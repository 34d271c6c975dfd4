"""The statistics against hand-computed figures: per-level intervals, Holm's adjustment, every
level against the best (paired over runs matching on the other swept keys and seed, else Welch),
honest notes for one-run levels and identical values, each level at its best other settings."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from scipy import stats

from sweep.outcomes import METRICS
from sweep.report import verdict_lines
from sweep.statistics import IDENTICAL, NO_INTERVAL, aggregate, best_settings, compare_factor, holm

T975 = {1: 12.706204736, 2: 4.302652730, 3: 3.182446305, 5: 2.570581836}  # Student's t, 97.5th percentile
ACC = METRICS["test_acc"]


def runs(rows, keys=("optimizer", "seed")) -> pd.DataFrame:
    return pd.DataFrame([{**dict(zip(keys, r[:-1])), "test_acc": r[-1], "status": "completed" if r[-1] else "diverged",
                          "best_epoch": 3, "train_time_s": 1.0} for r in rows])  # fmt: skip


def hand_made() -> pd.DataFrame:
    return runs([("adam", 0, 0.80), ("adam", 1, 0.82), ("adam", 2, 0.84),
                 ("sgd", 0, 0.70), ("sgd", 1, 0.74), ("sgd", 2, None)])  # fmt: skip


def test_aggregation_matches_hand_computed_statistics():
    table = aggregate(hand_made(), ["optimizer"], ACC).set_index("optimizer")
    adam, sgd = table.loc["adam"], table.loc["sgd"]
    assert (adam.n_runs, adam.n_completed, sgd.n_runs, sgd.n_completed) == (3, 3, 3, 2)
    assert adam["mean"] == pytest.approx(0.82) and adam["std"] == pytest.approx(0.02)
    half = T975[2] * 0.02 / math.sqrt(3)
    assert (adam.ci95_low, adam.ci95_high) == pytest.approx((0.82 - half, 0.82 + half))
    half = T975[1] * math.sqrt(0.0008) / math.sqrt(2)
    assert (sgd.ci95_low, sgd.ci95_high) == pytest.approx((0.72 - half, 0.72 + half))
    assert (adam["rank"], sgd["rank"]) == (1, 2) and adam.note == sgd.note == ""


def test_loss_metrics_rank_lowest_first():
    table = hand_made().rename(columns={"test_acc": "test_loss"})
    assert aggregate(table, ["optimizer"], METRICS["test_loss"]).optimizer.tolist() == ["sgd", "adam"]


def test_one_run_and_identical_values_are_said_not_drawn_as_certainty():
    table = aggregate(runs([("adam", 0, 0.9), ("sgd", 0, 0.8), ("sgd", 1, 0.8)]), ["optimizer"], ACC)
    notes = dict(zip(table.optimizer, table.note))
    assert notes == {"adam": NO_INTERVAL, "sgd": IDENTICAL}
    assert table.set_index("optimizer").loc["adam", ["ci95_low", "ci95_high"]].isna().all()


def test_holm_matches_hand_computed_adjustments():
    # sorted 0.01, 0.03, 0.04 -> 3 x 0.01, max(0.03, 2 x 0.03), max(0.06, 1 x 0.04); NaN is outside the family
    assert holm([0.01, 0.04, math.nan, 0.03]) == pytest.approx([0.03, 0.06, math.nan, 0.06], nan_ok=True)
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_every_level_is_compared_with_the_best_paired_over_seeds_and_holm_adjusted():
    table = runs([("adam", 0, 0.80), ("adam", 1, 0.82), ("adam", 2, 0.84),
                  ("sgd", 0, 0.70), ("sgd", 1, 0.74), ("sgd", 2, 0.75),
                  ("rmsprop", 0, 0.79), ("rmsprop", 1, 0.80), ("rmsprop", 2, 0.845)])  # fmt: skip
    v = compare_factor(table, "optimizer", ["seed"], ACC)
    assert v.best == "adam" and [c.level for c in v.contrasts] == ["rmsprop", "sgd"]  # all of them, best first
    assert v.matched_on == ["seed"]
    expected = {}
    for c in v.contrasts:
        other = {"rmsprop": [0.79, 0.80, 0.845], "sgd": [0.70, 0.74, 0.75]}[c.level]
        d = [a - b for a, b in zip([0.80, 0.82, 0.84], other)]
        mean = sum(d) / 3
        sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 2)
        half = T975[2] * sd / math.sqrt(3)
        assert c.test == "paired" and c.n_pairs == 3
        assert c.lead == pytest.approx(mean) and (c.ci_low, c.ci_high) == pytest.approx((mean - half, mean + half))
        expected[c.level] = 2 * stats.t.sf(abs(mean / (sd / math.sqrt(3))), 2)
        assert c.p == pytest.approx(expected[c.level])
    ps = sorted(expected.values())  # Holm over the two comparisons
    adjusted = {lvl: min(1, (2 if p == ps[0] else 1) * p) for lvl, p in expected.items()}
    adjusted[max(adjusted, key=adjusted.get)] = max(adjusted.values())
    assert {c.level: c.p_holm for c in v.contrasts} == pytest.approx(adjusted)
    sgd = next(c for c in v.contrasts if c.level == "sgd")
    assert sgd.real and "outside noise" in " ".join(verdict_lines(v, "test_acc"))


def test_pairs_match_on_every_other_swept_key_and_the_seed():
    rows = [(o, lr, s, base + 0.01 * s + (0.02 if lr == 0.01 else 0))
            for o, base in (("adam", 0.9), ("sgd", 0.85), ("adagrad", 0.80), ("rmsprop", 0.88))
            for lr in (0.001, 0.01) for s in (0, 1, 2)]  # fmt: skip
    table = runs(rows, keys=("optimizer", "lr", "seed"))
    v = compare_factor(table, "optimizer", ["lr", "seed"], ACC)
    assert [c.level for c in v.contrasts] == ["rmsprop", "sgd", "adagrad"]  # the 3rd and 4th too
    assert v.matched_on == ["lr", "seed"] and all(c.test == "no spread" and c.n_pairs == 6 for c in v.contrasts)
    sentence = " ".join(verdict_lines(v, "test_acc"))
    assert "matched on lr, seed" in sentence and "split_per_seed=true" in sentence


def test_unpaired_levels_get_welchs_test_and_its_interval():
    table = hand_made()
    table.loc[5, ["test_acc", "status", "seed"]] = [0.75, "completed", 7]  # no partner for adam's seed 2
    [c] = compare_factor(table, "optimizer", ["seed"], ACC).contrasts
    a, b = [0.80, 0.82, 0.84], [0.70, 0.74, 0.75]
    va, vb = pd.Series(a).var(), pd.Series(b).var()
    se = math.sqrt(va / 3 + vb / 3)
    df = se**4 / ((va / 3) ** 2 / 2 + (vb / 3) ** 2 / 2)
    half = stats.t.ppf(0.975, df) * se
    lead = sum(a) / 3 - sum(b) / 3
    assert c.test == "welch" and c.lead == pytest.approx(lead)
    assert (c.ci_low, c.ci_high) == pytest.approx((lead - half, lead + half))
    assert c.p == pytest.approx(2 * stats.t.sf(lead / se, df))


def test_a_tie_is_called_a_tie():
    table = runs([("adam", 0, 0.8), ("adam", 1, 0.8), ("sgd", 0, 0.8), ("sgd", 1, 0.8)])
    v = compare_factor(table, "optimizer", ["seed"], ACC)
    assert "a tie" in " ".join(verdict_lines(v, "test_acc")) and "leads by 0" not in " ".join(
        verdict_lines(v, "test_acc")
    )


def test_each_level_at_its_best_setting_of_the_others():
    rows = [("adam", 0.001, 0.90), ("adam", 0.01, 0.85), ("sgd", 0.001, 0.70), ("sgd", 0.01, 0.93)]
    table = runs([(o, lr, 0, acc) for o, lr, acc in rows], keys=("optimizer", "lr", "seed"))
    best = best_settings(table, "optimizer", ["lr"], ACC)
    assert best[["optimizer", "lr", "mean", "rank"]].values.tolist() == [
        ["sgd", 0.01, 0.93, 1],
        ["adam", 0.001, 0.9, 2],
    ]


def over_claimed() -> pd.DataFrame:
    """The issue's real question in miniature: sgd at lr=1e-3 still learning (poor), sgd at 1e-2 as
    good as adam at its best. Averaged over lr adam wins clearly; at each one's best lr, it is noise."""
    rows = []
    for seed, (a3, a2, s3, s2) in enumerate(
        [(0.955, 0.94, 0.80, 0.96), (0.96, 0.95, 0.82, 0.94), (0.95, 0.945, 0.81, 0.953)]
    ):
        rows += [("adam", 1e-3, seed, a3), ("adam", 1e-2, seed, a2), ("sgd", 1e-3, seed, s3), ("sgd", 1e-2, seed, s2)]
    return runs(rows, keys=("optimizer", "lr", "seed"))


def test_the_headline_tests_each_level_at_its_best_setting_paired_by_seed():
    from sweep.statistics import compare_at_best

    table = over_claimed()
    averaged = compare_factor(table, "optimizer", ["lr", "seed"], ACC)
    assert averaged.contrasts[0].lead == pytest.approx(0.0695)  # mostly sgd at lr=1e-3
    assert "averaged over lr" in verdict_lines(averaged, "test_acc")[0]

    at_best = compare_at_best(table, "optimizer", ["lr", "seed"], ACC)
    assert (at_best.best, at_best.settings) == ("adam", {"adam": {"lr": 1e-3}, "sgd": {"lr": 1e-2}})
    (sgd,) = at_best.contrasts
    d = [0.955 - 0.96, 0.96 - 0.94, 0.95 - 0.953]  # adam at 1e-3 minus sgd at 1e-2, paired by seed
    expected = stats.ttest_1samp(d, 0.0)
    assert (sgd.test, sgd.n_pairs, sgd.p_holm) == ("paired", 3, pytest.approx(expected.pvalue))
    assert not sgd.real and sgd.lead == pytest.approx(0.004)  # a twentieth of the averaged lead
    lines = verdict_lines(at_best, "test_acc")
    assert "each level at its best setting of the others, picked on these same runs" in lines[0]
    assert "`adam` at lr=0.001 has the best mean" in lines[0]
    assert lines[1].startswith("  - against `sgd` at lr=0.01") and "within noise" in lines[1]


def test_an_interval_wider_than_any_difference_of_accuracies_says_the_sample_is_too_small():
    # two runs a side, far apart, unpaired: Welch's interval for the difference runs past [-1, 1]
    table = runs([("adam", 0, 0.9), ("adam", 1, 0.1), ("sgd", 2, 0.5), ("sgd", 3, 0.45)])
    v = compare_factor(table, "optimizer", [], ACC)
    contrast = v.contrasts[0]
    assert contrast.ci_low < -1 or contrast.ci_high > 1
    said = " ".join(verdict_lines(v, "test_acc"))
    assert "the sample is too small to tell" in said and "95% CI" not in said
