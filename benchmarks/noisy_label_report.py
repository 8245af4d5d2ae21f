"""Tables, statistics and the convergence plot of the noisy-label study (see
noisy_label_study.py); every number is computed from the recorded runs."""
from __future__ import annotations

import os

import numpy as np

METRICS = ("dice", "iou", "hd95", "asd")


def _select(runs, **kw):
    return sorted((r for r in runs if all(r.get(k) == v for k, v in kw.items())), key=lambda r: r["seed"])


def _fmt(values, scale=1.0, digits=2):
    v = np.asarray(values, dtype=float) * scale
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.{digits}f}" if len(v) else "–"


def _paired(a_runs, b_runs, key="dice"):
    """(mean difference b - a, paired t-test p-value) over the seeds both have."""
    from scipy.stats import ttest_rel

    a = {r["seed"]: r["test"][key] for r in a_runs}
    b = {r["seed"]: r["test"][key] for r in b_runs}
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return float("nan"), float("nan"), len(seeds)
    x, y = np.array([a[s] for s in seeds]), np.array([b[s] for s in seeds])
    p = float(ttest_rel(y, x).pvalue) if np.any(x != y) else 1.0
    return float((y - x).mean()), p, len(seeds)


def _row(name, rs):
    return (f"| {name} | {len(rs)} | {_fmt([r['test']['dice'] for r in rs], 100)} | "
            f"{_fmt([r['test']['iou'] for r in rs], 100)} | {_fmt([r['test']['hd95'] for r in rs])} | "
            f"{_fmt([r['test']['asd'] for r in rs])} |")


def write_report(runs: list[dict], md_path: str, fig_path: str, discussion: str | None = None,
                 split_coverage: bool = True) -> None:
    """Write the markdown report (and the convergence PNG); ``discussion``: an optional markdown file
    with the hand-written interpretation, appended after the computed reading; ``split_coverage``:
    also measure the fuzzy split's coverage of the noise on the study's training data."""
    lines = ["# Noisy-label study: DALE vs standard training (synthetic benchmark, CPU)", ""]
    if runs:
        r0 = runs[0]
        lines += [f"Runs recorded: {len(runs)} (commit {r0.get('commit')}, torch {r0.get('torch')}). "
                  "Setting and method: `benchmarks/noisy_label_study.py` (docstring). Each run is re-created "
                  "with `python -m benchmarks.noisy_label_study --only <id>`; every run's config, seed, "
                  "per-epoch history and metrics are in `noisy_label_study.json`.", ""]
    header = ["| method | seeds | Dice (%) | mIoU (%) | HD95 (px) | ASD (px) |", "|---|---:|---:|---:|---:|---:|"]
    stats = []
    for backbone in sorted({r["backbone"] for r in runs if r["group"] == "main"}):
        for noise in sorted({r["noise"] for r in runs if r["group"] == "main"}):
            std = _select(runs, group="main", backbone=backbone, noise=noise, variant="standard")
            dale = _select(runs, group="main", backbone=backbone, noise=noise, variant="dale")
            lines += [f"## {backbone}, label noise {noise:g}", ""] + header + [_row("standard", std), _row("DALE", dale)]
            if backbone == "unet":
                gce = _select(runs, group="gce", noise=noise)
                if gce:
                    lines.append(_row("GCE (q = 0.7)", gce))
            d, p, n = _paired(std, dale)
            base = np.mean([r["test"]["dice"] for r in std]) if std else float("nan")
            growth = 100 * d / base if std else float("nan")
            dh, ph, _ = _paired(std, dale, "hd95")
            lines += ["", f"DALE - standard, paired over {n} seeds: Dice {100 * d:+.2f} points (growth rate "
                      f"{growth:+.2f}%), paired t-test p = {p:.3g}; HD95 {dh:+.2f} px (p = {ph:.3g}).", ""]
            stats.append(dict(backbone=backbone, noise=noise, d=d, p=p, growth=growth))
    abl = [("standard", _select(runs, group="main", backbone="unet", noise=1.0, variant="standard")[:3])]
    for name in ("AE", "AE+ER", "AE+ER+omega"):
        abl.append((name, _select(runs, group="ablation", variant=name)))
    abl.append(("AE+ER+omega+L_W (DALE)", _select(runs, group="main", backbone="unet", noise=1.0, variant="dale")[:3]))
    if any(rs for _, rs in abl[1:4]):
        lines += ["## Component ablation (Tab. 4), U-Net, label noise 1, seeds 0-2", ""] + header
        lines += [_row(name, rs) for name, rs in abl]
        lines.append("")
    om = [r["omega"] for r in runs if r.get("omega") and r["group"] == "main" and r["noise"] > 0]
    if om:
        lines += ["## Does omega flag the injected noisy pixels?", "",
                  "After training, on 64 training images: AUROC of dL_val/domega (high = distrusted) for the "
                  "known noise mask, over all pixels and over the fuzzy region (M^f > 0.5); the share of "
                  "noisy pixels among the pixels DALE flags as not clean, against the overall noise rate.", "",
                  "| runs | AUROC (all) | AUROC (fuzzy region) | noise rate | noise rate among flagged | flagged |",
                  "|---:|---:|---:|---:|---:|---:|",
                  f"| {len(om)} | {_fmt([o['auroc_all'] for o in om], 1, 3)} | {_fmt([o['auroc_fuzzy'] for o in om], 1, 3)} | "
                  f"{_fmt([o['noise_rate'] for o in om], 100)}% | {_fmt([o['noise_rate_among_flagged'] for o in om], 100)}% | "
                  f"{_fmt([o['flagged_fraction'] for o in om], 100)}% |", ""]
    inv = sorted({r["variant"] for r in runs if r["group"] == "investigation"})
    if inv:
        base = [("standard", _select(runs, group="main", backbone="unet", noise=1.0, variant="standard")[:3]),
                ("DALE (as specified)", _select(runs, group="main", backbone="unet", noise=1.0, variant="dale")[:3])]
        lines += ["## Investigation: why DALE trails here (U-Net, noise 1, seeds 0-2)", "",
                  "Compared on the clean *validation* set (final epoch), not the test set: Eq. 7's masked inputs "
                  "(`plain-images`: the model sees the plain image; the targets stay Eq. 7's M * Y), its soft "
                  "targets M * Y (`weighted-labels`: masked images, hard Y, the masks weight the losses), and tau "
                  "within the paper's range.", "",
                  "| variant | seeds | validation Dice (%) | test Dice (%) |", "|---|---:|---:|---:|"]
        for name, rs in base + [(v, _select(runs, group="investigation", variant=v)[:3]) for v in inv]:
            val = [r["history"][-1].get("val_dice", float("nan")) for r in rs]
            lines.append(f"| {name} | {len(rs)} | {_fmt(val, 100)} | {_fmt([r['test']['dice'] for r in rs], 100)} |")
        lines.append("")
    cov = _split_coverage() if split_coverage else None
    if cov:
        lines += ["## Coverage of the fuzzy split (training set, noise 1, 200 images per seed, seeds 0-4)", "",
                  "| pixels with M^f > 0.5 | injected noisy pixels with M^f > 0.5 | noisy pixels fully fuzzy (M^f = 1) |",
                  "|---:|---:|---:|",
                  f"| {_fmt([c[0] for c in cov], 100)}% | {_fmt([c[1] for c in cov], 100)}% | {_fmt([c[2] for c in cov], 100)}% |",
                  ""]
    if _convergence(runs, fig_path):
        lines += ["## Convergence (Fig. 7a)", "",
                  f"![validation Dice against iterations]({fig_path.rsplit('/', 1)[-1]})", "",
                  "Validation Dice (clean masks) after each epoch, mean ± std over seeds, U-Net.", ""]
    lines += ["## Reading (computed from the runs)", ""] + _reading(runs, stats, abl, om, inv) + [""]
    if discussion and os.path.exists(discussion):
        with open(discussion) as f:
            lines += [f.read().strip(), ""]
    with open(md_path, "w") as f:
        f.write("\n".join(lines))


def _verdict(d, p):
    return ("better" if d > 0 else "worse") + (" (significant at 0.05)" if p < 0.05 else " (not significant at 0.05)")


def _reading(runs, stats, abl, om, inv) -> list[str]:
    out = []
    for s in stats:
        if not np.isfinite(s["d"]):
            continue
        out.append(f"- {s['backbone']}, noise {s['noise']:g}: DALE vs standard is {_verdict(s['d'], s['p'])}: "
                   f"{100 * s['d']:+.2f} Dice points (growth rate {s['growth']:+.2f}%), p = {s['p']:.3g}.")
    for noise in sorted({r["noise"] for r in runs if r["group"] == "gce"}):
        gce = _select(runs, group="gce", noise=noise)
        d, p, n = _paired(_select(runs, group="main", backbone="unet", noise=noise, variant="standard"), gce)
        if n >= 2:
            out.append(f"- U-Net, noise {noise:g}: GCE vs standard is {_verdict(d, p)}: {100 * d:+.2f} Dice "
                       f"points over {n} seeds, p = {p:.3g}.")
        d, p, n = _paired(gce,
                          _select(runs, group="main", backbone="unet", noise=noise, variant="dale"))
        if n >= 2:
            out.append(f"- U-Net, noise {noise:g}: DALE vs GCE is {_verdict(d, p)}: {100 * d:+.2f} Dice points, "
                       f"p = {p:.3g}.")
    steps = [(name, rs) for name, rs in abl if rs]
    for (prev, a), (name, b) in zip(steps, steps[1:]):
        d, p, n = _paired(a, b)
        if n >= 2:
            out.append(f"- Ablation step {prev} -> {name}: {100 * d:+.2f} Dice points over {n} seeds (p = {p:.3g}).")
    if om:
        a = np.array([o["auroc_all"] for o in om])
        lift = np.array([o["noise_rate_among_flagged"] / o["noise_rate"] for o in om])
        how = "well" if a.mean() >= 0.9 else "moderately" if a.mean() >= 0.7 else "weakly" if a.mean() > 0.55 else "hardly"
        out.append(f"- omega flags the injected noisy pixels {how}: AUROC "
                   f"{a.mean():.3f} (range {a.min():.3f}-{a.max():.3f}; 0.5 = chance, 1 = perfect); the flagged "
                   f"pixels are {lift.mean():.1f}x richer in noise than the training set as a whole.")
    if inv:
        spec = _select(runs, group="main", backbone="unet", noise=1.0, variant="dale")[:3]
        val = lambda rs: {r["seed"]: r["history"][-1].get("val_dice", float("nan")) for r in rs}  # noqa: E731
        base = val(spec)
        for v in inv:
            other = val(_select(runs, group="investigation", variant=v))
            seeds = sorted(set(base) & set(other))
            if seeds:
                d = np.mean([other[s] - base[s] for s in seeds])
                out.append(f"- Investigation `{v}` vs DALE as specified: validation Dice {100 * d:+.2f} points "
                           f"over {len(seeds)} seeds.")
        std = _select(runs, group="main", backbone="unet", noise=1.0, variant="standard")
        for v in inv:
            d, p, n = _paired(std, _select(runs, group="investigation", variant=v))
            if n >= 5:
                out.append(f"- `{v}` (run on all seeds after the validation comparison) vs standard training, "
                           f"test set: {_verdict(d, p)}: {100 * d:+.2f} Dice points over {n} seeds, p = {p:.3g}.")
    return out


def _convergence(runs, path) -> bool:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    drawn = False
    for ax, noise in zip(axes, (0.0, 1.0)):
        for variant in ("standard", "dale"):
            rs = _select(runs, group="main", backbone="unet", noise=noise, variant=variant)
            curves = [[(h["step"], h["val_dice"]) for h in r["history"] if "val_dice" in h] for r in rs]
            curves = [c for c in curves if c]
            if not curves:
                continue
            n = min(len(c) for c in curves)
            steps = np.array([p[0] for p in curves[0][:n]])
            vals = np.array([[p[1] for p in c[:n]] for c in curves])
            m, s = vals.mean(0), vals.std(0)
            ax.plot(steps, m, label=f"{variant} ({len(curves)} seeds)")
            ax.fill_between(steps, m - s, m + s, alpha=0.2)
            drawn = True
        ax.set_title(f"U-Net, label noise {noise:g}")
        ax.set_xlabel("iterations")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    axes[0].set_ylabel("validation Dice")
    if drawn:
        fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return drawn


def _split_coverage():
    """(share of pixels in the fuzzy region, share of noisy pixels in it, share of noisy pixels
    in fully fuzzy patches) per seed, from the generated training data (no training needed)."""

    import dale_ext
    from benchmarks.noisy_label_study import N_TRAIN, SEEDS, SIZE
    from dale_ext.data import SyntheticDataset

    out = []
    for seed in SEEDS:
        ds = SyntheticDataset("train", n=N_TRAIN, size=SIZE, seed=seed, noise_level=1.0)
        fs = dale_ext.fuzzy_split(ds.data.images, ds.data.noisy_masks, patch_size=8, tau=0.9)
        fm = fs.fuzzy_mask[:, 0]
        noise = ds.data.noise_masks
        out.append((float((fm > 0.5).float().mean()), float((fm[noise] > 0.5).float().mean()),
                    float((fm[noise] == 1).float().mean())))
    return out
