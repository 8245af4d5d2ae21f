"""Benchmarks, the noisy-label study and their shared helpers."""
from __future__ import annotations

import os
import subprocess


def git_commit(short: bool = False) -> str | None:
    """The commit of this checkout (recorded beside every figure), or None outside git. A copy of
    the tree without its .git (the GPU machine's) names it in DALE_GIT_COMMIT."""
    if os.environ.get("DALE_GIT_COMMIT"):
        sha = os.environ["DALE_GIT_COMMIT"]
        return sha[:7] if short else sha
    args = ["git", "rev-parse", *(["--short"] if short else []), "HEAD"]
    try:
        out = subprocess.run(args, capture_output=True, text=True, cwd=os.path.dirname(os.path.abspath(__file__)))
    except OSError:
        return None
    return out.stdout.strip() or None
