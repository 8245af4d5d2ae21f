"""DALE vs standard training under label noise, in miniature (issue: "Evidence").

    python -m benchmarks.noisy_label_study            # run everything missing (resumable), then report
    python -m benchmarks.noisy_label_study --report   # tables/plots from the recorded runs only
    python -m benchmarks.noisy_label_study --only <run id>   # re-create one run from its recorded config

Setting (chosen to fit about two hours on the 2-core CPU machine): the synthetic noisy-label
benchmark (dale_ext.data.synthetic) at 48 x 48 pixels, 200 training images with noisy masks,
50 clean validation and 100 clean test images per seed; label noise levels 0 (none) and 1.0;
backbones U-Net and Attention U-Net (width 16, depth 3); 20 epochs, batch 8, Adam 3e-4, patches
8 x 8 (the paper's 16 x 16 on 224 px images gives 14 patches per side; 8 x 8 on 48 px gives 6),
other hyper-parameters the paper's (tau 0.9, alpha 0.05, K 1). Five seeds per (backbone, noise,
method); the seed sets the data, the initialisation and the data order, and DALE and standard
training of one seed share all three (paired comparison). Baselines: GCE (generalized
cross-entropy, Zhang & Sabuncu 2018) on U-Net; the component ablation of Tab. 4 on U-Net at
noise 1.0 with three seeds. Test metrics are computed on clean masks once per run, after
training; nothing is tuned on the test set.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

from benchmarks import git_commit

RESULTS = os.path.join(os.path.dirname(__file__), "results", "noisy_label_study.json")
REPORT = os.path.join(os.path.dirname(__file__), "results", "noisy_label_study.md")
FIGURE = os.path.join(os.path.dirname(__file__), "results", "noisy_label_study_convergence.png")
# the hand-written interpretation, appended to the report (written after looking at the runs)
DISCUSSION = os.path.join(os.path.dirname(__file__), "noisy_label_discussion.md")

SIZE, N_TRAIN, N_VAL, N_TEST, EPOCHS, BATCH = 48, 200, 50, 100, 20, 8
SEEDS = [0, 1, 2, 3, 4]
NOISE = [0.0, 1.0]
BACKBONES = ["unet", "attention_unet"]
ABLATION = {  # Tab. 4, added one by one (standard = none; dale = all)
    "AE": dict(method="dale", use_edges=False, use_omega=False, use_alignment=False),
    "AE+ER": dict(method="dale", use_omega=False, use_alignment=False),
    "AE+ER+omega": dict(method="dale", use_alignment=False),
}


# Why DALE underperforms here (investigation; compared on the clean validation set, not the test set):
# is it the masked inputs (Eq. 7, M * X), the soft targets (M * Y), or the paper's tau / alpha?
INVESTIGATION = {
    "weighted-labels": dict(label_mode="weighted"),
    "plain-images": dict(mask_images=False),
    "tau0.7": dict(tau=0.7),
}


def plan() -> list[dict]:
    runs = []
    for backbone in BACKBONES:
        for noise in NOISE:
            for seed in SEEDS:
                for method in ("standard", "dale"):
                    runs.append(dict(group="main", backbone=backbone, noise=noise, seed=seed, variant=method,
                                     train=dict(method=method)))
    for noise in NOISE:
        for seed in SEEDS:
            runs.append(dict(group="gce", backbone="unet", noise=noise, seed=seed, variant="gce",
                             train=dict(method="standard", loss="gce")))
    for name, train in ABLATION.items():
        for seed in SEEDS[:3]:
            runs.append(dict(group="ablation", backbone="unet", noise=1.0, seed=seed, variant=name, train=train))
    for name, train in INVESTIGATION.items():
        # the variant that recovered on the validation set is then run on all seeds, for a paired
        # test against standard training on the test set
        for seed in (SEEDS if name == "plain-images" else SEEDS[:3]):
            runs.append(dict(group="investigation", backbone="unet", noise=1.0, seed=seed, variant=name,
                             train=dict(method="dale", **train)))
    for r in runs:
        r["id"] = f"{r['group']}-{r['backbone']}-noise{r['noise']:g}-seed{r['seed']}-{r['variant']}"
    return runs


def run_config(run: dict):
    from dale_ext.runs import RunConfig
    from dale_ext.train import TrainConfig

    train = dict(epochs=EPOCHS, batch_size=BATCH, patch_size=8, seed=run["seed"], **run["train"])
    return RunConfig(dataset="synthetic", image_size=SIZE, model=run["backbone"], base_channels=16, depth=3,
                     synthetic={"n": N_TRAIN, "noise_level": run["noise"], "seed": run["seed"]},
                     device="cpu", train=TrainConfig(**train))


def auroc(scores: np.ndarray, positives: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with mid-ranks)."""
    from scipy.stats import rankdata

    pos = positives.astype(bool)
    n1, n0 = pos.sum(), (~pos).sum()
    if n1 == 0 or n0 == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def omega_analysis(trainer, train_ds) -> dict:
    """How well dL_val/domega (the confidence gradient; high = distrusted) flags the injected
    noisy pixels of the training set, with the trained model: AUROC over all pixels and over the
    fuzzy region (M^f > 0.5), and the share of noisy pixels among those flagged not clean."""
    from dale_ext.train import DaleTrainer

    if not isinstance(trainer, DaleTrainer):
        return {}
    dt = trainer
    n_images = 64
    scores, fuzzy, flagged = [], [], []
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(train_ds, range(n_images)), batch_size=BATCH)
    dt.model.train()
    for x, y in loader:
        s = dt.split(x, y, 1)
        logits, _ = dt.forward(s.x_fuzzy)
        conf = dt.confidence_step(s, dt.pixel_loss(logits.float(), s.y_fuzzy))
        scores.append(conf.gradient.flatten())
        fuzzy.append((s.fuzzy_mask > 0.5).flatten())
        flagged.append((~conf.clean).flatten())
    g, f, fl = (torch.cat(v).numpy() for v in (scores, fuzzy, flagged))
    z = train_ds.data.noise_masks[:n_images].flatten().numpy()
    return {"auroc_all": auroc(g, z), "auroc_fuzzy": auroc(g[f], z[f]), "noise_rate": float(z.mean()),
            "noise_rate_among_flagged": float(z[fl].mean()) if fl.any() else float("nan"),
            "flagged_fraction": float(fl.mean())}


def execute(run: dict, recorded: dict | None = None) -> dict:
    """Train and evaluate one run; ``recorded``: a run config recorded in the JSON (re-created
    as recorded, even if the plan has changed since)."""
    import dataclasses

    from dale_ext.data import SyntheticDataset
    from dale_ext.runs import RunConfig, build_run_model
    from dale_ext.train import build_trainer, evaluate

    cfg = RunConfig.from_dict(recorded) if recorded else run_config(run)
    torch.set_num_threads(2)
    syn = dict(size=cfg.image_size, seed=cfg.synthetic["seed"], noise_level=cfg.synthetic["noise_level"])
    train = SyntheticDataset("train", n=cfg.synthetic["n"], **syn)
    val = SyntheticDataset("val", n=N_VAL, **syn)
    test = SyntheticDataset("test", n=N_TEST, **syn)
    model = build_run_model(cfg, in_channels=3)
    trainer = build_trainer(model, cfg.train, device="cpu")
    start = time.time()
    history = trainer.fit(train, val_dataset=val, progress=False)
    seconds = time.time() - start
    metrics = evaluate(trainer.model, test, 2, device="cpu")
    omega = omega_analysis(trainer, train)
    trainer.close()
    return {**run, "config": dataclasses.asdict(cfg), "test": metrics, "history": history, "omega": omega,
            "seconds": seconds, "steps_per_epoch": history[0]["step"] if history else 0, "commit": git_commit(),
            "torch": torch.__version__}


def load() -> dict:
    if os.path.exists(RESULTS):
        with open(RESULTS) as f:
            return {r["id"]: r for r in json.load(f)["runs"]}
    return {}


def save(done: dict) -> None:
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    meta = {"setting": __doc__.split("Setting")[1].strip() if "Setting" in __doc__ else "",
            "machine": os.uname().machine, "cpus": os.cpu_count()}
    tmp = RESULTS + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"meta": meta, "runs": list(done.values())}, f, indent=1)
    os.replace(tmp, RESULTS)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--report", action="store_true", help="only write the report from recorded runs")
    p.add_argument("--only", help="run (or re-run) one run id")
    args = p.parse_args(argv)
    done = load()
    runs = plan()
    if args.only:
        match = [r for r in runs if r["id"] == args.only]
        if not match:
            print(f"unknown run id {args.only!r}", file=sys.stderr)
            return 2
        result = execute(match[0], done[args.only]["config"] if args.only in done else None)
        print(json.dumps(result["test"], indent=1))
        done[result["id"]] = result
        save(done)
        return 0
    if not args.report:
        todo = [r for r in runs if r["id"] not in done]
        for i, run in enumerate(todo):
            t = time.time()
            print(f"[{i + 1}/{len(todo)}] {run['id']} ...", end=" ", flush=True)
            done[run["id"]] = execute(run)
            save(done)
            print(f"Dice {100 * done[run['id']]['test']['dice']:.2f}  ({time.time() - t:.0f} s)", flush=True)
    from benchmarks.noisy_label_report import write_report

    write_report(list(done.values()), REPORT, FIGURE, DISCUSSION)
    print(f"written: {RESULTS}, {REPORT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
