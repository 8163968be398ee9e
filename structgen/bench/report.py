"""Where benchmark results go: a Markdown table, JSON Lines, a PNG, and the header that says how they were made."""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub Markdown table; numeric columns (by header position) are right-aligned."""
    rows = [[str(c) for c in r] for r in rows]
    for r in rows:
        if len(r) != len(headers):
            raise ValueError(f"row has {len(r)} cells, table has {len(headers)} columns: {r}")
    align = ["---" if i == 0 else "---:" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _clean(value):
    # JSON has no NaN; a missing figure is null.
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        return _clean(value.item())
    return value


def write_jsonl(path: Path, records: Iterable[dict]) -> int:
    """One JSON object per line; returns the number written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "w") as fh:
        for rec in records:
            fh.write(json.dumps(_clean(rec), ensure_ascii=False) + "\n")
            n += 1
    return n


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpu_name() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    except Exception:  # a broken CUDA install must not stop a CPU benchmark
        pass
    return "none"


def _git_commit() -> str:
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        commit = out.stdout.strip() or "unknown"
        return commit + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command as a person would retype it: `structgen bench ...` whichever way it was started."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return "structgen " + " ".join(shlex.quote(a) for a in argv)


def run_header(command: str | None = None) -> dict:
    """How a run was made: command, date, commit, machine. Every table in RESULTS.md carries it."""
    return {
        "command": command or command_line(),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _git_commit(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "gpu": _gpu_name(),
        "python": platform.python_version(),
    }


def header_markdown(header: dict) -> str:
    return "\n".join([
        f"- command: `{header['command']}`",
        f"- date: {header['date']}, commit: {header['commit']}",
        f"- machine: {header['cpu']}, {header['cores']} cores, GPU: {header['gpu']}",
    ])


def plot_distributions(path: Path, panels: Sequence[tuple[str, str, dict[str, np.ndarray]]]) -> Path | None:
    """Empirical CDFs, one panel per (title, x label, {series name: values}); log x axis.

    Returns the PNG path, or None when matplotlib is missing (the tables still stand on their own).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
    for ax, (title, xlabel, series) in zip(axes[0], panels):
        for name, values in series.items():
            arr = np.sort(np.asarray(values, dtype=np.float64))
            arr = arr[arr > 0]  # log axis
            if arr.size == 0:
                continue
            ax.step(arr, np.arange(1, arr.size + 1) / arr.size, where="post", label=f"{name} (n={arr.size})")
        ax.set_xscale("log")
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("fraction ≤ x")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
