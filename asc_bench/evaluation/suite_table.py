"""The paper-shaped table of a suite (`asc-bench leaderboard --suite NAME`) and its consistency checks.

Table: rows are models, columns the suite's columns, cells accuracy in % as `mean ± half-width` of the
95% CI (ours: Student-t over our per-episode/per-draw/per-fold scores, `stats.CI_FORMULA`), then a
Params column. Our rows come from the suite's records (`asc-bench bench`); the published rows follow,
marked "(reported)", with the interval the paper printed.

Consistency, per reproduced cell with a published value (our row's `compare_to`, default its label):
- published value with CI and n (Ericsson et al.'s evaluation: half-width h = 1.96·σ/√n with σ the
  population s.d. over n = 600 episodes): σ is recovered as h·√n/1.96, the sample s.d. as
  σ·√(n/(n−1)), and Welch's t-test (scipy.stats.ttest_ind_from_stats) compares our mean, s.d. and n
  with the published ones. It treats the two sets of episodes as independent samples of per-episode
  accuracy; it is exact for normal scores and otherwise relies on n being large (≥ 600 published; ours
  2,000 in the built-in tasks), where the mean of bounded scores is close to normal.
- `papers_ci=True`: our interval is computed the papers' way too (1.96·σ/√n, population σ), and the test
  is the two-sided z-test on the difference with standard errors h/1.96 from both intervals.
- published value without CI (ablation rows, TAU22 96.8 %): no test; we say whether the value lies in
  our 95% CI.
- published gain over another row (ContrastASC): our gain is the paired difference of the two rows on the
  same episodes (`stats.paired_t`, its 95% CI); we say whether the published gain lies in it.
The verdict is "consistent" when p ≥ 0.05 (or the value lies in our interval), else "differs". A
"differs" is evidence the reproduction or the paper's protocol differs, not which one is wrong.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy import stats as sps

from asc_bench.evaluation import stats
from asc_bench.evaluation.leaderboard import fmt_count, md_cell
from asc_bench.evaluation.suites import CI_METHODS, Published, Suite

Z95 = 1.959963984540054


@dataclass
class Check:
    model: str
    column: str
    reported_row: str
    ours: float                 # %
    ours_hw: float              # %
    reported: float             # %
    reported_hw: float | None   # %
    difference: float           # ours - reported, %
    test: str
    p_value: float | None
    verdict: str


def suite_records(suite: Suite, results_dir: str | Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(model label, column label) -> the latest valid record of that cell (the seam for record loading)."""
    from asc_bench.evaluation.compare import record_order_key
    from asc_bench.evaluation.records import load_records

    out: dict[tuple[str, str], dict[str, Any]] = {}
    folder = Path(results_dir)
    for r in load_records(folder):
        tag = r.get("suite")
        if not isinstance(tag, dict) or tag.get("name") != suite.name or not r.get("scores"):
            continue
        key = (str(tag.get("model")), str(tag.get("column")))
        if key not in out or record_order_key(r) > record_order_key(out[key]):
            out[key] = r
    return out


def papers_half_width(scores: Sequence[float]) -> float:
    """1.96·σ/√n with σ the population standard deviation (ddof = 0): Ericsson et al.'s interval."""
    x = np.asarray(scores, dtype=np.float64)
    return float(Z95 * x.std(ddof=0) / math.sqrt(x.size))


def value_check(scores: Sequence[float], pub: Published, column: str, model: str, papers_ci: bool) -> Check:
    x = np.asarray(scores, dtype=np.float64) * 100.0
    n = int(x.size)
    mean = float(x.mean())
    hw = papers_half_width(x) if papers_ci else stats.mean_ci(x).half_width
    value, pub_hw = pub.values[column]
    diff = mean - value
    if pub_hw is None or n < 2:
        inside = math.isfinite(hw) and abs(diff) <= hw
        return Check(model, column, pub.model, mean, hw, value, pub_hw, diff,
                     "no published CI: reported value inside our 95% CI?", None,
                     "consistent" if inside else "differs")
    if papers_ci or pub.n is None:
        se = math.hypot(hw / Z95, pub_hw / Z95)
        z = diff / se if se > 0 else math.copysign(math.inf, diff) if diff else 0.0
        p = float(2 * sps.norm.sf(abs(z)))
        test = "z-test, both intervals as 1.96·SE" + ("" if papers_ci else " (published n unknown)")
    else:
        sigma = pub_hw * math.sqrt(pub.n) / Z95
        s_pub = sigma * math.sqrt(pub.n / (pub.n - 1))
        res = sps.ttest_ind_from_stats(mean, float(x.std(ddof=1)), n, value, s_pub, pub.n, equal_var=False)
        p = float(res.pvalue)
        test = f"Welch t, published σ from CI (n={pub.n})"
    return Check(model, column, pub.model, mean, hw, value, pub_hw, diff, test, p,
                 "consistent" if p >= 0.05 else "differs")


def gain_check(scores: Sequence[float], base: Sequence[float], same_episodes: bool, pub: Published, column: str,
               model: str) -> Check:
    value, _ = pub.values[column]
    a, b = np.asarray(scores, np.float64) * 100.0, np.asarray(base, np.float64) * 100.0
    if same_episodes and a.size == b.size and a.size >= 2:
        d = a - b
        ci = stats.mean_ci(d)
        p = stats.paired_t(a, b).p_value
        inside = ci.low <= value <= ci.high
        return Check(model, column, f"{pub.model} − {pub.over}", ci.mean, ci.half_width, value, None,
                     ci.mean - value, f"paired gain over {pub.over} (p vs 0: {p:.3g}); reported inside its 95% CI?",
                     None, "consistent" if inside else "differs")
    gain = float(a.mean() - b.mean())
    return Check(model, column, f"{pub.model} − {pub.over}", gain, math.nan, value, None, gain - value,
                 "unpaired (different episodes): no interval", None, "n/a")


def _compare_to(suite: Suite, label: str) -> str:
    m = next((m for m in suite.models if m.label == label), None)
    if m is not None and m.compare_to:
        return m.compare_to
    return label


def consistency_checks(suite: Suite, records: dict[tuple[str, str], dict[str, Any]],
                       papers_ci: bool = False) -> list[Check]:
    checks = []
    labels = _our_labels(suite, records)
    for label in labels:
        target = _compare_to(suite, label)
        for col in suite.columns:
            rec = records.get((label, col.label))
            if rec is None:
                continue
            pub = suite.published_for(target, "value")
            if pub is not None and col.label in pub.values:
                checks.append(value_check(rec["scores"], pub, col.label, label, papers_ci))
            gain = suite.published_for(target, "gain")
            if gain is not None and col.label in gain.values:
                base_label = next((l for l in labels if _compare_to(suite, l) == gain.over), None)
                base = records.get((base_label, col.label)) if base_label else None
                if base is not None:
                    checks.append(gain_check(rec["scores"], base["scores"],
                                             rec.get("episode_hash") == base.get("episode_hash"), gain, col.label,
                                             label))
    return checks


def _our_labels(suite: Suite, records: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    present = {label for label, _ in records}
    order = [m.label for m in suite.models if m.label in present]
    return order + sorted(present - set(order))


def _pct(mean: float, hw: float | None) -> str:
    if hw is None or not math.isfinite(hw):
        return f"{mean:.1f}"
    return f"{mean:.1f} ± {hw:.1f}"




def render_suite_table(suite: Suite, records: dict[tuple[str, str], dict[str, Any]], *, papers_ci: bool = False) -> str:
    """Markdown: the paper-shaped table, the consistency table, how each interval was computed, sources."""
    cols = list(suite.columns)
    lines = [f"# {suite.name}", "", md_cell(suite.description), "", f"Source: {md_cell(suite.source)}", "",
             "| Model | " + " | ".join(md_cell(c.label) for c in cols) + " | Params |",
             "|---|" + "--:|" * len(cols) + "--:|"]
    for label in _our_labels(suite, records):
        cells, params = [], None
        for c in cols:
            r = records.get((label, c.label))
            if r is None:
                cells.append("–")
                continue
            ci = stats.mean_ci(r["scores"])
            cells.append(_pct(ci.mean * 100, ci.half_width * 100))
            params = r.get("encoder", {}).get("params", params)
        lines.append(f"| {md_cell(label)} | " + " | ".join(cells) + f" | {fmt_count(params)} |")
    for p in suite.published:
        if p.kind != "value":
            continue
        cells = [_pct(*p.values[c.label]) if c.label in p.values else "–" for c in cols]
        lines.append(f"| {md_cell(p.model)} (reported) | " + " | ".join(cells) + f" | {md_cell(p.params or '–')} |")
    lines += ["", f"Ours: accuracy in %, mean ± half-width of the 95% CI ({stats.CI_FORMULA}) over our scores "
                  f"(per episode, draw or fold; n per cell below). Reported: as printed in the source."]
    gains = [p for p in suite.published if p.kind == "gain"]
    for p in gains:
        vals = ", ".join(f"{k}: {v[0]:+.1f}" for k, v in p.values.items())
        lines.append(f"Reported gain of {md_cell(p.model)} over {md_cell(p.over)}: {vals} ({md_cell(p.source)}).")
    checks = consistency_checks(suite, records, papers_ci)
    lines += ["", "## Consistency with the published numbers", ""]
    if not checks:
        lines.append("No reproduced cell has a published counterpart (a row is compared with the published row "
                     "named by its `compare_to`, or by its label).")
    else:
        ours_ci = "1.96·σ/√n, population σ (the papers' way)" if papers_ci else "Student-t 95% CI"
        lines += [f"| Model | Column | Ours ({ours_ci}) | Reported | Difference | Test | p | Verdict |",
                  "|---|---|--:|--:|--:|---|--:|---|"]
        for k in checks:
            p = "–" if k.p_value is None else f"{k.p_value:.3g}"
            lines.append(f"| {md_cell(k.model)} vs {md_cell(k.reported_row)} | {md_cell(k.column)} | {_pct(k.ours, k.ours_hw)} | "
                         f"{_pct(k.reported, k.reported_hw)} | {k.difference:+.1f} | {md_cell(k.test)} | {p} | {k.verdict} |")
    methods = sorted({p.ci_method for p in suite.published if p.ci_method != "none"})
    lines += ["", "How the intervals were computed:"]
    for m in methods:
        ns = sorted({p.n for p in suite.published if p.ci_method == m and p.n})
        lines.append(f"- Published: {CI_METHODS[m]}, n = {', '.join(map(str, ns)) or 'unknown'} episodes "
                     f"(assumed from the evaluation code the paper follows; not stated in the paper).")
    lines.append(f"- Ours: {stats.CI_FORMULA}, over our own n, which differs from the papers' method"
                 + (" (the consistency table uses the papers' formula for ours, `--papers-ci`)." if papers_ci else
                    "; `--papers-ci` computes ours the papers' way for the comparison."))
    lines.append("- Test: see `asc_bench.evaluation.suite_table` (Welch t with the published σ recovered from its "
                 "CI; z-test with --papers-ci; interval containment where nothing was published to test with).")
    ns = sorted({len(r["scores"]) for r in records.values()})
    if ns:
        lines.append(f"- Our n per cell: {', '.join(map(str, ns))}.")
    lines += ["", "Published numbers, their sources and what is unverified:"]
    for p in suite.published:
        extra = f"; unverified: {'; '.join(p.unverified)}" if p.unverified else ""
        lines.append(f"- {md_cell(p.model)} ({p.kind}): {md_cell(p.source)}{md_cell(extra)}")
    for u in suite.unverified:
        lines.append(f"- suite: {md_cell(u)}")
    lines.append("")
    return "\n".join(lines)
