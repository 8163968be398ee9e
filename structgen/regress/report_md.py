"""report.md: a comparison as Markdown (also what `structgen regress compare` prints).

Sections in the order a reviewer asks: the verdict and its gates, what differs in the fingerprints, the paired
metrics, latency and tokens, the cases that flipped (right -> wrong first), per-field drift.
"""

from __future__ import annotations

from ..bench import stats
from ..bench.report import markdown_table
from .compare import Comparison
from .paired_stats import PairedChange

_MAX_OUTPUT = 160   # characters of an output shown in a table cell


def _cell(text) -> str:
    s = str(text).replace("\n", "\\n").replace("|", "\\|")
    return s if len(s) <= _MAX_OUTPUT else s[: _MAX_OUTPUT - 1] + "…"


def _pct(x: float) -> str:
    return "-" if x != x else f"{x * 100:.1f}%"


def metric_rows(metrics: list[PairedChange], confidence: float) -> tuple[list[str], list[list]]:
    headers = ["metric", "cases", "outcomes", "baseline", "candidate", "change (points)", "right->wrong",
               "wrong->right", "McNemar p", f"{confidence:.0%} CI (points)"]
    rows = [[m.name, m.cases, m.outcomes, _pct(m.baseline_rate), _pct(m.candidate_rate), f"{m.diff * 100:+.1f}",
             m.right_to_wrong, m.wrong_to_right, f"{m.p_value:.3g}",
             f"{m.ci[0] * 100:+.1f} .. {m.ci[1] * 100:+.1f}"] for m in metrics]
    return headers, rows


def render(cmp: Comparison) -> str:
    t = cmp.thresholds
    b, c = cmp.baseline, cmp.candidate
    parts = ["# structgen regress compare", "",
             f"- baseline: `{b.folder}` ({len(b.results)} cases)",
             f"- candidate: `{c.folder}` ({len(c.results)} cases)",
             f"- golden set: `{b.meta.get('golden', {}).get('path')}` (hash "
             f"`{str(b.meta.get('golden', {}).get('hash'))[:16]}`)", "",
             f"**Verdict: {cmp.verdict_line()}**", ""]
    parts += ["## Gates", "",
              markdown_table(["gate", "result", "detail"],
                             [[g.name, "REGRESSED" if g.regressed else "ok", _cell(g.detail)] for g in cmp.gates]),
              "",
              f"Rule: an accuracy metric regresses when it drops by more than {t['max_accuracy_drop'] * 100:.1f} "
              f"points (--max-accuracy-drop) and the drop is significant: exact McNemar p < "
              f"{1 - t['confidence']:.2g} and the paired bootstrap {t['confidence']:.0%} interval "
              f"({t['resamples']} resamples of the cases, seed {t['seed']}) wholly below zero; any case that "
              f"loses validity regresses outright; latency regresses when the p50 ratio exceeds "
              f"{t['max_latency_ratio']:g}x (--max-latency-ratio; 0 = not gated)."]
    parts += ["", "## Fingerprints", ""]
    if cmp.fingerprint_diff:
        parts += ["The two runs differ in:", "",
                  markdown_table(["setting", "baseline", "candidate"],
                                 [[k, _cell(x), _cell(y)] for k, x, y in cmp.fingerprint_diff])]
    else:
        parts += ["The fingerprints are identical (same weights, tokenizer, dtype, quantization, engine options, "
                  "sampling, structgen version and commit)."]
    fp = b.fingerprint
    parts += ["", f"Baseline: model {fp.get('model')}, weights `{str(fp.get('weights_hash'))[:16]}`, tokenizer "
                  f"`{str(fp.get('tokenizer_fingerprint'))[:16]}`, dtype {fp.get('dtype')}, quantization "
                  f"{fp.get('quantization')}, structgen {fp.get('structgen_version')} "
                  f"({str(fp.get('git_commit'))[:12] or 'no commit'}), API {fp.get('api')}."]
    headers, rows = metric_rows(cmp.metrics, t["confidence"])
    parts += ["", "## Accuracy (paired by case)", "", markdown_table(headers, rows)]
    for note in cmp.notes:
        parts += ["", note]
    lat, tok = cmp.latency, cmp.tokens
    parts += ["", "## Latency and tokens", "",
              markdown_table(["", "baseline", "candidate", "candidate / baseline"],
                             [["latency p50 s", stats.fmt(lat["baseline"]["p50"]), stats.fmt(lat["candidate"]["p50"]),
                               stats.fmt_ratio(lat["p50_ratio"])],
                              ["latency p95 s", stats.fmt(lat["baseline"]["p95"]), stats.fmt(lat["candidate"]["p95"]),
                               stats.fmt_ratio(lat["p95_ratio"])],
                              ["output tokens", tok["baseline"], tok["candidate"], stats.fmt_ratio(tok["ratio"])]]),
              "", f"Latency: end to end per case, over the {lat['cases']} cases both runs answered."]
    flipped = [ch for ch in cmp.cases if ch.flips or ch.field_flips]
    order = sorted(flipped, key=lambda ch: (not any(v == "right->wrong" for v in ch.flips.values()), ch.id))
    parts += ["", f"## Flipped cases ({len(flipped)})", ""]
    if order:
        parts.append(markdown_table(
            ["case", "flips", "fields flipped", "baseline output", "candidate output"],
            [[ch.id, ", ".join(f"{k}: {v}" for k, v in ch.flips.items()) or "-",
              ", ".join(f"{k}: {v}" for k, v in ch.field_flips.items()) or "-",
              _cell(ch.baseline.text or f"({ch.baseline.status})"),
              _cell(ch.candidate.text or f"({ch.candidate.status})")] for ch in order]))
    else:
        parts.append("No case flipped.")
    changed = sum(ch.output_changed for ch in cmp.cases)
    parts += ["", f"Outputs that changed at all (text or status): {changed} of {len(cmp.cases)}."]
    if cmp.per_field:
        parts += ["", "## Per-field drift", "",
                  "Reported, not gated (the overall field accuracy gates); a field whose drop is significant (the "
                  "same test as the gates) is marked.", ""]
        headers, rows = metric_rows(cmp.per_field, t["confidence"])
        headers = ["field"] + headers[1:] + ["drift"]
        alpha = 1 - t["confidence"]
        rows = [r + ["dropped" if m.significant(alpha) else ("rose" if m.p_value < alpha and m.ci[0] > 0 else "")]
                for r, m in zip(rows, cmp.per_field)]
        parts.append(markdown_table(headers, rows))
    return "\n".join(parts) + "\n"
