"""The `dale` command line: help, clear one-line errors, strict configs, split on real image
files, a tiny train/eval/resume cycle and a tiny demo."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from PIL import Image

from dale_ext.cli import main


def run_cli(*argv):
    return main([str(a) for a in argv])


@pytest.mark.parametrize("command", [[], ["train"], ["eval"], ["split"], ["demo"]])
def test_help_reads_well(capsys, command):
    with pytest.raises(SystemExit) as e:
        run_cli(*command, "--help")
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: dale") and len(text) > 200


def test_console_script_is_installed():
    out = subprocess.run([os.path.join(os.path.dirname(sys.executable), "dale"), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "train" in out.stdout and "demo" in out.stdout


@pytest.mark.parametrize("argv,message", [
    (["train", "--dataset", "nosuch", "--epochs", "1"], "unknown dataset"),
    (["train", "--tau", "3"], "tau must be in [0, 1]"),
    (["train", "--set", "train.tua=1"], "unknown key"),
    (["train", "--set", "noequals"], "KEY=VALUE"),
    (["train", "--config", "/nonexistent.yaml"], "config file not found"),
    (["eval", "/nonexistent/run"], "not found"),
    (["split", "/nonexistent.png", "/nonexistent_mask.png"], "file not found"),
])
def test_wrong_arguments_give_one_clear_line(capsys, argv, message, tmp_path):
    code = run_cli(*argv, *(["--out", tmp_path / "r"] if argv[0] == "train" else []))
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_config_file_wrong_type_is_rejected(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"dataset": "synthetic", "train": {"epochs": "many"}}))
    assert run_cli("train", "--config", cfg, "--out", tmp_path / "r") == 2
    assert "`epochs`" in capsys.readouterr().err


def write_pair(tmp_path, fmt):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:80, :96]
    lesion = ((yy - 40) ** 2 / 600 + (xx - 50) ** 2 / 900) < 1
    img = (rng.random((80, 96, 3)) * 60 + 80 + 80 * lesion[..., None]).astype(np.uint8)
    ip, mp = tmp_path / f"img.{fmt}", tmp_path / f"mask.{'png' if fmt == 'png' else 'jpg'}"
    Image.fromarray(img).save(ip)
    Image.fromarray((lesion * 255).astype(np.uint8)).save(mp)
    return ip, mp


@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_split_writes_a_png(tmp_path, capsys, fmt):
    ip, mp = write_pair(tmp_path, fmt)
    out = tmp_path / "split.png"
    assert run_cli("split", ip, mp, "-o", out, "--patch-size", "8") == 0
    im = Image.open(out)
    assert im.format == "PNG" and im.size[0] > 500
    assert "written" in capsys.readouterr().out


def test_train_eval_resume_cycle(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({
        "dataset": "synthetic", "image_size": 32, "base_channels": 8, "depth": 2, "val_fraction": 0.1,
        "synthetic": {"n": 12}, "train": {"epochs": 1, "batch_size": 4, "patch_size": 8},
    }))
    out = tmp_path / "run"
    assert run_cli("train", "--config", cfg, "--out", out, "--quiet", "--set", "synthetic.noise_level=0.5",
                   "--alpha", "0.1") == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["train"]["alpha"] == 0.1 and saved["synthetic"]["noise_level"] == 0.5
    for name in ("checkpoint.pt", "log.csv", "curves.png", "metrics.json", "metrics.csv"):
        assert (out / name).exists(), name
    assert run_cli("eval", out) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["test"]) == {"dice", "iou", "hd95", "asd"}
    assert run_cli("train", "--config", cfg, "--out", out, "--quiet", "--epochs", "2", "--resume", "--no-eval") == 0
    rows = (out / "log.csv").read_text().strip().splitlines()
    assert len(rows) == 3 and rows[-1].startswith("2,")   # header + epoch 1 + epoch 2 (resumed)


def test_tiny_demo(tmp_path, capsys):
    out = tmp_path / "demo"
    assert run_cli("demo", "--out", out, "--epochs", "1", "--n-train", "16", "--quiet") == 0
    summary = json.loads((out / "metrics.json").read_text())
    for method in ("standard", "dale"):
        assert set(summary[method]) == {"dice", "iou", "hd95", "asd"}
    assert set(summary["growth_rate_percent"]) == {"dice", "iou", "hd95", "asd"}
    report = (out / "report.md").read_text()
    assert f"{100 * summary['dale']['dice']:.2f}" in report   # the report shows the measured numbers
    for fig in ("curves.png", "overlays.png", "omega.png", "split.png"):
        assert Image.open(out / fig).format == "PNG"
