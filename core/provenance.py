"""Where a result came from: the git commit of the code that produced it."""

from __future__ import annotations

import subprocess

from core.settings import ROOT


def git_sha() -> str:
    """HEAD's sha, or "unknown" outside a git checkout."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
