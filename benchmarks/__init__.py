"""Benchmarks, the noisy-label study and their shared helpers."""
from __future__ import annotations

import os
import subprocess


def git_commit(short: bool = False) -> str | None:
    """The commit of this checkout (recorded beside every figure), or None outside git."""
    args = ["git", "rev-parse", *(["--short"] if short else []), "HEAD"]
    try:
        out = subprocess.run(args, capture_output=True, text=True, cwd=os.path.dirname(os.path.abspath(__file__)))
    except OSError:
        return None
    return out.stdout.strip() or None
