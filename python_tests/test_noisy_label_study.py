"""The statistics of the noisy-label study (benchmarks/noisy_label_study.py, _report.py) against
independent computations: AUROC by brute-force pair counting, the paired t-test by its formula,
and the report's tables from hand-made runs."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from benchmarks.noisy_label_report import _paired, write_report
from benchmarks.noisy_label_study import auroc, plan


def brute_auroc(scores, positives):
    """P(score of a positive > score of a negative) + 0.5 P(tie), over all pairs."""
    pos = [s for s, p in zip(scores, positives) if p]
    neg = [s for s, p in zip(scores, positives) if not p]
    wins = sum((a > b) + 0.5 * (a == b) for a, b in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(5))
def test_auroc_equals_pair_counting_with_ties(seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 6, 80).astype(float)          # many ties
    positives = rng.random(80) < 0.3
    assert auroc(scores, positives) == pytest.approx(brute_auroc(scores, positives), abs=1e-12)


def test_auroc_extremes():
    y = np.array([0, 0, 1, 1], dtype=bool)
    assert auroc(np.array([0.1, 0.2, 0.8, 0.9]), y) == 1.0
    assert auroc(np.array([0.9, 0.8, 0.2, 0.1]), y) == 0.0
    assert math.isnan(auroc(np.array([0.1, 0.2]), np.array([True, True])))


def _run(variant, seed, dice, group="main", backbone="unet", noise=1.0):
    return dict(group=group, backbone=backbone, noise=noise, seed=seed, variant=variant,
                test=dict(dice=dice, iou=dice - 0.1, hd95=2.0, asd=0.5),
                history=[dict(step=25, val_dice=dice), dict(step=50, val_dice=dice + 0.01)], omega={})


def test_paired_t_test_matches_formula():
    a = [_run("standard", s, d) for s, d in enumerate([0.80, 0.82, 0.85, 0.79, 0.81])]
    b = [_run("dale", s, d) for s, d in enumerate([0.83, 0.84, 0.86, 0.83, 0.82])]
    d, p, n = _paired(a, b)
    diff = np.array([0.03, 0.02, 0.01, 0.04, 0.01])
    t = diff.mean() / (diff.std(ddof=1) / math.sqrt(5))
    from scipy.stats import t as student

    assert n == 5 and d == pytest.approx(diff.mean())
    assert p == pytest.approx(2 * student.sf(abs(t), 4), rel=1e-9)


def test_report_tables_from_runs(tmp_path):
    runs = [_run("standard", s, 0.80 + 0.01 * s) for s in range(3)]
    runs += [_run("dale", s, 0.85 + 0.012 * s) for s in range(3)]
    md = tmp_path / "r.md"
    discussion = tmp_path / "d.md"
    discussion.write_text("## Discussion\n\nhand-written")
    write_report(runs, str(md), str(tmp_path / "c.png"), str(discussion), split_coverage=False)
    text = md.read_text()
    assert "| standard | 3 | 81.00 ± 1.00 |" in text
    assert "| DALE | 3 | 86.20 ± 1.20 |" in text
    assert "Dice +5.20 points (growth rate +6.42%)" in text       # 5.2 / 81
    assert "DALE vs standard is better" in text and text.rstrip().endswith("hand-written")
    assert (tmp_path / "c.png").exists()


def test_plan_ids_are_unique_and_cover_the_issue():
    runs = plan()
    ids = [r["id"] for r in runs]
    assert len(ids) == len(set(ids))
    main = [r for r in runs if r["group"] == "main"]
    assert {r["backbone"] for r in main} == {"unet", "attention_unet"}
    assert {r["noise"] for r in main} >= {0.0, 1.0} and len({r["seed"] for r in main}) >= 5
    assert sum(r["group"] == "gce" for r in runs) >= 5
    assert {r["variant"] for r in runs if r["group"] == "ablation"} == {"AE", "AE+ER", "AE+ER+omega"}
