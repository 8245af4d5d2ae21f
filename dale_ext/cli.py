"""The ``dale`` command line: ``train``, ``eval``, ``split`` and ``demo``.

Configuration precedence: built-in defaults < ``--config`` YAML < command-line flags
(``--tau 0.8``, or ``--set train.tau=0.8`` for any key). The YAML is parsed with
``yaml.safe_load`` and validated into :class:`dale_ext.runs.RunConfig` (unknown keys and wrong
types are errors); the full configuration is saved beside the checkpoint as ``config.yaml``.
Wrong arguments give one line on stderr and exit status 2, not a traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import typing

from dale_ext.train.config import TrainConfig

_RUN_FLAGS = {  # RunConfig fields exposed as flags (the rest via --config / --set)
    "dataset": (str, "dataset name: synthetic, isic2016, ph2, kvasir, polyp, mosmed, synapse, folder"),
    "data_root": (str, "folder holding the dataset (not for synthetic)"),
    "train_split": (str, "training split name (dataset default if omitted)"),
    "test_dataset": (str, "evaluate on another dataset (e.g. ph2 after training on isic2016)"),
    "test_root": (str, "folder of the test dataset"),
    "image_size": (int, "images are resized to SIZE x SIZE (default 224)"),
    "val_fraction": (float, "fraction of the training data held out for validation"),
    "model": (str, "unet, unet++, attention_unet, or smp:<arch>[:<encoder>]"),
    "base_channels": (int, "width of the built-in models"),
    "depth": (int, "number of downsamplings of the built-in models"),
    "device": (str, "cpu or cuda (default: cuda when available)"),
}


class CLIError(Exception):
    pass


def _parse_value(text: str):
    import yaml

    return yaml.safe_load(text)


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run configuration")
    for name, (typ, text) in _RUN_FLAGS.items():
        g.add_argument("--" + name.replace("_", "-"), dest=f"run.{name}", type=typ, default=argparse.SUPPRESS, help=text)
    g.add_argument("--augment", dest="run.augment", action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                   help="random flips, rotations and scaling")
    h = p.add_argument_group("training hyper-parameters (TrainConfig; defaults are the paper's)")
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if f.name == "extra":
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        if hints[f.name] is bool:
            h.add_argument(flag, dest=f"train.{f.name}", action=argparse.BooleanOptionalAction,
                           default=argparse.SUPPRESS, help=f"(default: {default})")
        else:
            h.add_argument(flag, dest=f"train.{f.name}", type=_parse_value, default=argparse.SUPPRESS,
                           metavar=f.name.upper(), help=f"(default: {default})")
    p.add_argument("--config", metavar="YAML", help="YAML run configuration")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any configuration key, e.g. --set train.eps_max=0.01 --set synthetic.n=100")


def _run_config(args) -> "RunConfig":  # noqa: F821
    from dale_ext.runs import RunConfig, load_yaml

    data: dict = {}
    if args.config:
        if not os.path.exists(args.config):
            raise CLIError(f"config file not found: {args.config}")
        data = load_yaml(args.config)
        if not isinstance(data, dict):
            raise CLIError(f"{args.config}: expected a mapping at the top level")
    data.setdefault("train", {})
    for key, value in vars(args).items():
        if key.startswith("run."):
            data[key[4:]] = value
        elif key.startswith("train."):
            data["train"][key[6:]] = value
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise CLIError(f"--set expects KEY=VALUE; got {item!r}")
        target = data
        *parents, last = key.split(".")
        for part in parents:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise CLIError(f"--set {key}: {part} is not a mapping")
        target[last] = _parse_value(value)
    return RunConfig.from_dict(data)


def cmd_train(args) -> int:
    from dale_ext.runs import evaluate_run, train_run

    from dale_ext.train import distributed as dist_utils

    cfg = _run_config(args)
    device = dist_utils.init_from_env(cfg.device)   # under torchrun: one process per GPU / CPU share
    if device is not None:
        cfg.device = device
    out = args.out or os.path.join("runs", cfg.train.method)
    try:
        trainer, history = train_run(cfg, out, resume=args.resume, progress=not args.quiet)
        main, world = dist_utils.is_main(), dist_utils.world_size() if dist_utils.active() else None
    finally:
        if device is not None:  # the group this command made; evaluation below is one process's
            dist_utils.shutdown()
    if not main:
        return 0
    print(f"trained {len(history)} epoch(s); checkpoint: {os.path.join(out, 'checkpoint.pt')}"
          + (f" ({world} processes)" if world else ""))
    if not args.no_eval:
        results = evaluate_run(cfg, trainer.model, out)
        _print_metrics(results)
    return 0


def cmd_eval(args) -> int:
    from dale_ext.runs import evaluate_run, load_run

    if not os.path.exists(args.run):
        raise CLIError(f"run directory or checkpoint not found: {args.run}")
    cfg, model = load_run(args.run)
    for key in ("test_dataset", "test_root", "data_root", "device"):
        if getattr(args, key) is not None:
            setattr(cfg, key, getattr(args, key))
    if args.test_split:
        cfg.test_splits = list(args.test_split)
    out = args.out or (args.run if os.path.isdir(args.run) else os.path.dirname(os.path.abspath(args.run)))
    _print_metrics(evaluate_run(cfg, model, out))
    print(f"written: {os.path.join(out, 'metrics.json')}, {os.path.join(out, 'metrics.csv')}")
    return 0


def cmd_split(args) -> int:
    import torch

    from dale_ext import fuzzy_split, viz
    from dale_ext.data.readers import read_binary_mask, read_image, read_mask

    for path in (args.image, args.mask):
        if not os.path.exists(path):
            raise CLIError(f"file not found: {path}")
    image = torch.from_numpy(read_image(args.image, channels=3))
    mask = torch.from_numpy(read_mask(args.mask) if args.multiclass else read_binary_mask(args.mask))
    if image.shape[1:] != mask.shape:
        raise CLIError(f"image {args.image} is {tuple(image.shape[1:])} but mask {args.mask} is {tuple(mask.shape)}")
    if args.size:
        from dale_ext.data.resize import resize_image, resize_mask

        image, mask = resize_image(image, (args.size, args.size)), resize_mask(mask, (args.size, args.size))
    fs = fuzzy_split(image[None], mask[None], patch_size=args.patch_size, tau=args.tau, bins=args.bins)
    path = viz.plot_split(image, mask, fs, args.output, args.tau)
    frac = float((fs.fuzzy_mask == 1).float().mean())
    print(f"written: {path} ({fs.score.shape[1]}x{fs.score.shape[2]} patches; fully fuzzy pixels: {100 * frac:.1f}%)")
    return 0


def cmd_demo(args) -> int:
    from dale_ext.demo import run_demo

    summary = run_demo(args.out, epochs=args.epochs, n_train=args.n_train, noise_level=args.noise_level,
                       seed=args.seed, device=args.device, progress=not args.quiet)
    s, d, g = summary["standard"], summary["dale"], summary["growth_rate_percent"]
    print(f"standard: Dice {100 * s['dice']:.2f}%  mIoU {100 * s['iou']:.2f}%  HD95 {s['hd95']:.2f}  ASD {s['asd']:.2f}")
    print(f"DALE:     Dice {100 * d['dice']:.2f}%  mIoU {100 * d['iou']:.2f}%  HD95 {d['hd95']:.2f}  ASD {d['asd']:.2f}")
    print(f"growth rate (Dice): {g['dice']:+.2f}%   [{summary['seconds']:.0f} s]")
    print(f"written: {os.path.join(args.out, 'metrics.json')}, {os.path.join(args.out, 'report.md')} and figures")
    return 0


def _print_metrics(results: dict) -> None:
    print(f"{'test set':<24}{'Dice':>8}{'mIoU':>8}{'HD95':>8}{'ASD':>8}")
    for name, m in results.items():
        print(f"{name:<24}{100 * m['dice']:>8.2f}{100 * m['iou']:>8.2f}{m['hd95']:>8.2f}{m['asd']:>8.2f}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dale", description="DALE (CVPR 2025): lesion segmentation under noisy labels.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="{train,eval,split,demo}")
    sub.required = True

    t = sub.add_parser("train", help="train a model with DALE or standard training",
                       description="Train with DALE (default) or standard training; evaluate on the test set(s).")
    _add_config_flags(t)
    t.add_argument("--out", help="run directory (default: runs/<method>)")
    t.add_argument("--resume", action="store_true", help="continue from the run directory's checkpoint")
    t.add_argument("--no-eval", action="store_true", help="skip the evaluation at the end")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(fn=cmd_train)

    e = sub.add_parser("eval", help="evaluate a trained run (Dice, mIoU, HD95, ASD)",
                       description="Evaluate a run directory or checkpoint on its test set(s); writes CSV and JSON.")
    e.add_argument("run", help="run directory (or its checkpoint.pt)")
    e.add_argument("--test-split", action="append", help="test split(s), e.g. test or test:CVC-300 (repeatable)")
    e.add_argument("--test-dataset", help="evaluate on another dataset")
    e.add_argument("--test-root", help="folder of the test dataset")
    e.add_argument("--data-root", help="folder of the dataset, if it moved")
    e.add_argument("--device", help="cpu or cuda")
    e.add_argument("--out", help="where to write metrics.json / metrics.csv (default: the run directory)")
    e.set_defaults(fn=cmd_eval)

    s = sub.add_parser("split", help="draw the fuzzy / non-fuzzy split of one image (paper Fig. 2B)",
                       description="Write a PNG of an image's entropy and edge-ratio maps and its fuzzy masks.")
    s.add_argument("image", help="image file (PNG, JPG, BMP, ...)")
    s.add_argument("mask", help="mask file (binarised at grey level > 127 unless --multiclass)")
    s.add_argument("-o", "--output", default="split.png", help="output PNG")
    s.add_argument("--patch-size", type=int, default=16)
    s.add_argument("--tau", type=float, default=0.9)
    s.add_argument("--bins", type=int, default=256)
    s.add_argument("--size", type=int, help="resize to SIZE x SIZE first")
    s.add_argument("--multiclass", action="store_true", help="keep the mask's integer labels")
    s.set_defaults(fn=cmd_split)

    d = sub.add_parser("demo", help="standard vs DALE on the synthetic benchmark (about 13 min on 2 cores)",
                       description="Train U-Net with standard training and with DALE on the synthetic noisy-label "
                                   "benchmark; evaluate on clean test masks; write metrics.json, report.md, figures.")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--epochs", type=int, default=30)
    d.add_argument("--n-train", type=int, default=240)
    d.add_argument("--noise-level", type=float, default=1.0)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--device", default=None)
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(fn=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except (CLIError, ValueError, TypeError, FileNotFoundError, ImportError) as err:
        if os.environ.get("DALE_DEBUG"):  # the full traceback, for bug reports
            raise
        print(f"dale {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dale {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
