"""report.html: the comparison as one self-contained page: the Markdown report's tables, the plots as inline
SVG (plots.py), and a diff view of every changed output (characters removed struck through in red, added in
green, by difflib over the two texts). No script, no external file: it opens from a CI artifact as is."""

from __future__ import annotations

import difflib
import html

from ..bench import stats
from .compare import CaseChange, Comparison
from .plots import accuracy_bars, latency_distributions
from .report_md import metric_rows

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;
vertical-align:top}th{background:#f3f3f3}.bad{color:#b00;font-weight:bold}.ok{color:#070}
pre{white-space:pre-wrap;word-break:break-all;margin:0;font-size:12px}del{background:#fdd;color:#900}
ins{background:#dfd;color:#060;text-decoration:none}figure{margin:1em 0}.verdict{font-size:1.3em}
"""


def _table(headers, rows) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _esc_rows(rows) -> list[list[str]]:
    return [[html.escape(str(c)) for c in r] for r in rows]


def inline_diff(a: str, b: str) -> str:
    """`a` -> `b` as HTML: unchanged text plain, removed in <del>, added in <ins>."""
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            out.append(html.escape(a[i1:i2]))
        if op in ("delete", "replace"):
            out.append(f"<del>{html.escape(a[i1:i2])}</del>")
        if op in ("insert", "replace"):
            out.append(f"<ins>{html.escape(b[j1:j2])}</ins>")
    return "".join(out)


def _diff_row(ch: CaseChange) -> list[str]:
    a = ch.baseline.text or f"({ch.baseline.status})"
    b = ch.candidate.text or f"({ch.candidate.status})"
    flips = ", ".join(f"{k}: {v}" for k, v in {**ch.flips, **ch.field_flips}.items()) or "changed, same score"
    cls = "bad" if "right->wrong" in flips else ""
    return [html.escape(ch.id), f'<span class="{cls}">{html.escape(flips)}</span>', f"<pre>{inline_diff(a, b)}</pre>"]


def render(cmp: Comparison) -> str:
    t = cmp.thresholds
    verdict = html.escape(cmp.verdict_line())
    parts = ["<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>structgen regress compare</title>",
             f"<style>{_STYLE}</style></head><body>", "<h1>structgen regress compare</h1>",
             f"<p>baseline <code>{html.escape(str(cmp.baseline.folder))}</code>, candidate "
             f"<code>{html.escape(str(cmp.candidate.folder))}</code>, {len(cmp.cases)} cases</p>",
             f'<p class="verdict {"bad" if cmp.regressed else "ok"}" id="verdict">{verdict}</p>',
             "<h2>Gates</h2>",
             _table(["gate", "result", "detail"],
                    [[html.escape(g.name), '<span class="bad">REGRESSED</span>' if g.regressed else
                      '<span class="ok">ok</span>', html.escape(g.detail)] for g in cmp.gates]),
             "<h2>Fingerprints</h2>"]
    if cmp.fingerprint_diff:
        parts.append(_table(["setting", "baseline", "candidate"], _esc_rows(cmp.fingerprint_diff)))
    else:
        parts.append("<p>The fingerprints are identical.</p>")
    headers, rows = metric_rows(cmp.metrics, t["confidence"])
    parts += ["<h2>Accuracy (paired by case)</h2>", _table(headers, _esc_rows(rows))]
    parts += [f"<p>{html.escape(n)}</p>" for n in cmp.notes]
    parts += ['<figure id="plot-accuracy">', accuracy_bars(cmp),
              "<figcaption>Accuracy per metric and per field, baseline vs candidate</figcaption></figure>"]
    lat, tok = cmp.latency, cmp.tokens
    parts += ["<h2>Latency and tokens</h2>",
              _table(["", "baseline", "candidate", "candidate / baseline"], _esc_rows([
                  ["latency p50 s", stats.fmt(lat["baseline"]["p50"]), stats.fmt(lat["candidate"]["p50"]),
                   stats.fmt_ratio(lat["p50_ratio"])],
                  ["latency p95 s", stats.fmt(lat["baseline"]["p95"]), stats.fmt(lat["candidate"]["p95"]),
                   stats.fmt_ratio(lat["p95_ratio"])],
                  ["output tokens", tok["baseline"], tok["candidate"], stats.fmt_ratio(tok["ratio"])]])),
              '<figure id="plot-latency">', latency_distributions(cmp),
              "<figcaption>Per-case latency, baseline vs candidate</figcaption></figure>"]
    changed = sorted((ch for ch in cmp.cases if ch.output_changed),
                     key=lambda ch: (not any(v == "right->wrong" for v in {**ch.flips, **ch.field_flips}.values()),
                                     ch.id))
    parts += [f'<h2 id="diffs">Changed outputs ({len(changed)} of {len(cmp.cases)})</h2>']
    if changed:
        parts.append(_table(["case", "flips", "baseline -> candidate"], [_diff_row(ch) for ch in changed]))
    else:
        parts.append("<p>No output changed.</p>")
    if cmp.per_field:
        headers, rows = metric_rows(cmp.per_field, t["confidence"])
        parts += ["<h2>Per-field drift</h2><p>Reported, not gated.</p>",
                  _table(["field"] + headers[1:], _esc_rows(rows))]
    parts.append("</body></html>")
    return "\n".join(parts)
