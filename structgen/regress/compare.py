"""Comparing two run folders of the same golden set: what changed, and is it a regression?

Metrics, each paired by case (paired_stats.py):
- valid output: every case (an error counts as invalid). A case valid in the baseline and invalid in the
  candidate is a regression outright, whatever the counts: valid output is structgen's invariant.
- exact match: the cases with `expected`.
- agreement with the baseline: the cases without `expected` (whose baseline output is valid). The baseline's
  own output is their reference answer, so the baseline is right on all of them by definition and the
  candidate is right where it says the same (equal JSON for schema cases, equal strings otherwise).
- field accuracy: the top-level fields of the cases with per-field answers, resampled by case.
Each of the last three regresses by paired_stats.PairedChange.regressed: drop > --max-accuracy-drop, exact
McNemar p < 1 - --confidence, and the bootstrap interval wholly below 0. Per-field drift (by "<title>.<key>") is reported with the same statistics
but does not gate: with dozens of fields some would cross any threshold by chance; the overall field accuracy
gates. Latency: p50 and p95 over the cases both runs answered, candidate / baseline; a p50 ratio above
--max-latency-ratio regresses (0: not gated).

Refused (RunDirError, exit 2): a missing or malformed folder, an incomplete run (resume it first), two runs of
different golden sets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..bench import stats
from .fingerprint import differences
from .outcome import CaseResult, same_output
from .paired_stats import PairedChange, paired_change
from .runner import RunDirError, read_meta, read_results


@dataclass(frozen=True)
class Run:
    folder: Path
    meta: dict
    results: dict[str, CaseResult]

    @property
    def fingerprint(self) -> dict:
        return self.meta.get("fingerprint", {})


@dataclass
class CaseChange:
    """One case in both runs; `flips` maps a metric to "right->wrong" / "wrong->right", `field_flips` a field key
    to the same."""

    id: str
    baseline: CaseResult
    candidate: CaseResult
    output_changed: bool
    flips: dict[str, str] = field(default_factory=dict)
    field_flips: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Gate:
    name: str
    regressed: bool
    detail: str


@dataclass
class Comparison:
    baseline: Run
    candidate: Run
    thresholds: dict
    fingerprint_diff: list[tuple[str, object, object]]
    metrics: list[PairedChange]
    per_field: list[PairedChange]
    latency: dict
    tokens: dict
    cases: list[CaseChange]
    gates: list[Gate]
    notes: list[str]

    @property
    def regressed(self) -> bool:
        return any(g.regressed for g in self.gates)

    def verdict_line(self) -> str:
        bad = [g for g in self.gates if g.regressed]
        if not bad:
            return "no regression"
        return "REGRESSED: " + "; ".join(f"{g.name} ({g.detail})" for g in bad)


def load_run(folder: Path) -> Run:
    folder = Path(folder)
    meta = read_meta(folder)
    results, _ = read_results(folder)
    expected = int(meta.get("golden", {}).get("cases", 0))
    if len(results) < expected:
        raise RunDirError(f"{folder} is an incomplete run ({len(results)} of {expected} cases); finish it first: "
                          f"rerun `structgen regress run` with the same --out (it resumes)")
    return Run(folder, meta, results)


def _flip(b: bool, c: bool) -> str | None:
    if b and not c:
        return "right->wrong"
    if c and not b:
        return "wrong->right"
    return None


def _agrees(b: CaseResult, c: CaseResult) -> bool:
    return c.valid and same_output(b.constraint_kind, b.text, c.text)


def compare_runs(base: Run, cand: Run, *, max_accuracy_drop: float = 0.02, max_latency_ratio: float = 1.5,
                 confidence: float = 0.95, resamples: int = 2000, seed: int = 0) -> Comparison:
    bg, cg = base.meta.get("golden", {}), cand.meta.get("golden", {})
    if bg.get("hash") != cg.get("hash") or set(base.results) != set(cand.results):
        raise RunDirError(f"the two runs are of different golden sets ({bg.get('path')} hash "
                          f"{str(bg.get('hash'))[:12]} vs {cg.get('path')} hash {str(cg.get('hash'))[:12]}): "
                          "their cases cannot be paired")
    ids = sorted(base.results)
    kw = {"resamples": resamples, "confidence": confidence, "seed": seed}
    valid_pairs, exact_pairs, agree_pairs, field_pairs = [], [], [], []
    by_field: dict[str, list] = {}
    cases: list[CaseChange] = []
    for cid in ids:
        b, c = base.results[cid], cand.results[cid]
        change = CaseChange(cid, b, c, output_changed=b.text != c.text or b.status != c.status)
        valid_pairs.append(([b.valid], [c.valid]))
        if (f := _flip(b.valid, c.valid)):
            change.flips["valid"] = f
        if b.exact is not None:
            exact_pairs.append(([bool(b.exact)], [bool(c.exact)]))
            if (f := _flip(bool(b.exact), bool(c.exact))):
                change.flips["exact"] = f
        elif b.valid:
            agree = _agrees(b, c)
            agree_pairs.append(([True], [agree]))
            if not agree:
                change.flips["agreement"] = "right->wrong"
        keys = sorted(b.fields)
        if keys:
            field_pairs.append(([b.fields[k] for k in keys], [bool(c.fields.get(k)) for k in keys]))
            for k in keys:
                name = f"{b.title or b.constraint_kind}.{k}"
                by_field.setdefault(name, []).append(([b.fields[k]], [bool(c.fields.get(k))]))
                if (f := _flip(b.fields[k], bool(c.fields.get(k)))):
                    change.field_flips[k] = f
        cases.append(change)

    metrics = [paired_change("valid output", valid_pairs, **kw)]
    if exact_pairs:
        metrics.append(paired_change("exact match", exact_pairs, **kw))
    if agree_pairs:
        metrics.append(paired_change("agreement with baseline", agree_pairs, **kw))
    if field_pairs:
        metrics.append(paired_change("field accuracy", field_pairs, **kw))
    per_field = [paired_change(name, pairs, **kw) for name, pairs in sorted(by_field.items())]

    answered = [cid for cid in ids if base.results[cid].status == "OK" and cand.results[cid].status == "OK"]
    lb = [base.results[cid].latency_s for cid in answered]
    lc = [cand.results[cid].latency_s for cid in answered]
    sb, sc = stats.summarize(lb, (50, 95)), stats.summarize(lc, (50, 95))
    latency = {"cases": len(answered), "baseline": sb, "candidate": sc,
               "p50_ratio": _ratio(sc["p50"], sb["p50"]), "p95_ratio": _ratio(sc["p95"], sb["p95"]),
               "baseline_values": lb, "candidate_values": lc}
    tb = sum(r.output_tokens for r in base.results.values())
    tc = sum(r.output_tokens for r in cand.results.values())
    tokens = {"baseline": tb, "candidate": tc, "ratio": _ratio(tc, tb)}

    gates = []
    new_invalid = [ch.id for ch in cases if ch.flips.get("valid") == "right->wrong"]
    gates.append(Gate("valid output", bool(new_invalid),
                      f"{len(new_invalid)} case(s) valid in the baseline are not in the candidate: "
                      f"{', '.join(new_invalid[:10])}" if new_invalid else "no case lost validity"))
    for m in metrics[1:]:
        gates.append(Gate(m.name, m.regressed(max_accuracy_drop, 1 - confidence),
                          f"{_pct(m.baseline_rate)} -> {_pct(m.candidate_rate)} ({m.diff * 100:+.1f} points, "
                          f"{confidence:.0%} CI {m.ci[0] * 100:+.1f}..{m.ci[1] * 100:+.1f}, McNemar p "
                          f"{m.p_value:.3g}; threshold -{max_accuracy_drop * 100:.1f} points)"))
    if max_latency_ratio > 0 and answered:
        r = latency["p50_ratio"]
        gates.append(Gate("latency p50", r == r and r > max_latency_ratio,
                          f"{stats.fmt(sb['p50'])} s -> {stats.fmt(sc['p50'])} s ({stats.fmt_ratio(r)}; threshold "
                          f"{max_latency_ratio:g}x)"))

    notes = []
    if agree_pairs:
        notes.append(f"{len(agree_pairs)} case(s) have no expected answer: for them the baseline's output is the "
                     "reference, so 'agreement with baseline' is the share of them the candidate answers the same "
                     "(the baseline scores 100% by definition).")
    bfp, cfp = base.fingerprint, cand.fingerprint
    if bfp.get("concurrency") != cfp.get("concurrency"):
        notes.append(f"The runs used different concurrency ({bfp.get('concurrency')} vs {cfp.get('concurrency')}): "
                     "latencies include different queueing and are not comparable.")
    if bfp.get("api") != cfp.get("api"):
        notes.append(f"The runs went through different APIs ({bfp.get('api')} vs {cfp.get('api')}).")
    return Comparison(base, cand, {"max_accuracy_drop": max_accuracy_drop, "max_latency_ratio": max_latency_ratio,
                                   "confidence": confidence, "resamples": resamples, "seed": seed},
                      differences(bfp, cfp), metrics, per_field, latency, tokens, cases, gates, notes)


def compare_dirs(baseline: Path, candidate: Path, **kwargs) -> Comparison:
    """Load both folders (RunDirError if unusable) and compare them."""
    return compare_runs(load_run(baseline), load_run(candidate), **kwargs)


def _ratio(a: float, b: float) -> float:
    return a / b if b and b == b and a == a else float("nan")


def _pct(x: float) -> str:
    return "-" if x != x else f"{x * 100:.1f}%"

