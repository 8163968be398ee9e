"""The report's plots, drawn with matplotlib (Agg) and returned as inline SVG text, so report.html is one file
that opens anywhere without its neighbours."""

from __future__ import annotations

import io
import re

from .compare import Comparison

_BASE, _CAND = "#4c72b0", "#dd8452"


def _svg(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    # an inline <svg> needs no XML prolog or DOCTYPE; keep from the <svg ...> element on
    return text[text.index("<svg"):]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def accuracy_bars(cmp: Comparison) -> str:
    """Grouped bars: each metric (valid, exact, agreement, field accuracy) and each field, baseline vs candidate."""
    plt = _pyplot()
    rows = [(m.name, m.baseline_rate, m.candidate_rate) for m in cmp.metrics]
    rows += [(m.name, m.baseline_rate, m.candidate_rate) for m in cmp.per_field]
    height = max(2.5, 0.32 * len(rows) + 1.2)
    fig, ax = plt.subplots(figsize=(7.5, height))
    ys = range(len(rows))
    ax.barh([y - 0.2 for y in ys], [r[1] * 100 for r in rows], height=0.4, color=_BASE, label="baseline")
    ax.barh([y + 0.2 for y in ys], [r[2] * 100 for r in rows], height=0.4, color=_CAND, label="candidate")
    ax.set_yticks(list(ys), [r[0] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 105)
    ax.set_xlabel("accuracy %")
    ax.set_title("Accuracy per metric and per field")
    if cmp.metrics:
        ax.axhline(len(cmp.metrics) - 0.5, color="#999", lw=0.6)
    ax.legend(loc="lower right", fontsize=8)
    return _svg(fig)


def latency_distributions(cmp: Comparison) -> str:
    """Per-case latency: empirical CDFs (left) and box plots (right), baseline vs candidate."""
    plt = _pyplot()
    lb = sorted(cmp.latency["baseline_values"])
    lc = sorted(cmp.latency["candidate_values"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2), gridspec_kw={"width_ratios": [2, 1]})
    for values, color, label in ((lb, _BASE, "baseline"), (lc, _CAND, "candidate")):
        if values:
            left.step(values, [(i + 1) / len(values) for i in range(len(values))], where="post", color=color,
                      label=label)
    left.set_xlabel("latency per case, s")
    left.set_ylabel("share of cases")
    left.set_title("Latency distribution (ECDF)")
    left.legend(fontsize=8)
    right.boxplot([lb or [0.0], lc or [0.0]], tick_labels=["baseline", "candidate"])
    right.set_ylabel("s")
    right.set_title("p50 / spread")
    fig.tight_layout()
    return _svg(fig)


def svg_size_ok(svg: str) -> bool:
    """An SVG whose width and height attributes are positive (what the tests check of each plot)."""
    m = re.search(r'<svg[^>]*\bwidth="([\d.]+)pt"[^>]*\bheight="([\d.]+)pt"', svg)
    return bool(m) and float(m.group(1)) > 0 and float(m.group(2)) > 0
