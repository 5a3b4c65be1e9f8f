"""Paired comparison of encoders on one task (`asc-bench compare`).

Record choice: for each encoder the latest record (timestamp, then path) of the task with the
chosen seed. Without an explicit seed, the seed is the one every encoder has a record for; if
several qualify, the one with the most recent record (a note says so).

Pairing: two records pair only when their `episode_hash` matches (same episodes or folds, hence
the same number of scores in the same order); otherwise AscBenchError says which seeds, spec hashes
or dataset fingerprints differ and how to fix it.

Pairs: every encoder against the first (the reference), or every pair with `all_pairs=True`,
d = scores(encoder) - scores(reference), on one or several tasks (`compare_family`).

Primary test, one per unit (asc_bench.evaluation.stats; docs/statistics.md):
  episodes/draws: paired t over the episodes;
  folds: Nadeau-Bengio corrected resampled t, n_test/n_train from the record's fold sizes.
Holm over every comparison of the call: all tasks and all pairs form one family of primary
p-values; the verdict uses the Holm-adjusted primary p at level alpha. A comparison that cannot
be tested (zero variance of d: "no variance: cannot test"; n = 1; fold sizes unknown) has no p,
is left out of the family and its verdict says why.
Secondary (shown unadjusted, not used for a verdict): Wilcoxon signed-rank (exact sign-flip up
to 200 non-zero d); the plain paired t for folds; exact McNemar only when each clip is predicted
once (fold protocols whose predictions list every test clip once: official test folds), never
on one draw of repeated draws.
Intervals of the mean difference, each named with its method and what it conditions on:
the Student-t CI over episodes (or folds), the paired bootstrap percentile CI (episodes), and
where both records carry them the class-level and group-level delete-one-unit jackknife.
Equivalence (`margin`, in points for accuracy): TOST with the primary test's standard error,
Holm-adjusted over the same comparisons; "equivalent within ±X points" when rejected.
"""
from __future__ import annotations

import json
import math
import shlex
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from asc_bench.api import AscBenchError, UsageError
from asc_bench.evaluation import stats
from asc_bench.evaluation.records import json_safe


@dataclass
class Interval:
    """An interval of the mean difference: which method, what it covers, what it holds fixed."""

    kind: str                      # "episode", "fold", "bootstrap", "class", "group"
    method: str
    covers: str
    conditions_on: str
    low: float
    high: float


@dataclass
class PairResult:
    encoder: str
    reference: str
    n: int
    mean_encoder: float
    mean_reference: float
    mean_diff: float               # mean(encoder - reference)
    ci_low: float                  # Student-t CI of the mean difference over episodes/folds
    ci_high: float
    p_t: float                     # plain paired t (primary for episodes, secondary for folds)
    p_wilcoxon: float              # secondary
    primary_test: str = ""
    p_primary: float = math.nan
    p_primary_holm: float = math.nan
    family_size: int = 0           # testable comparisons in the Holm family of this call
    mcnemar: stats.McNemarResult | None = None
    intervals: list[Interval] = field(default_factory=list)
    margin: float | None = None    # equivalence margin (metric units), when asked
    p_tost: float = math.nan
    p_tost_holm: float = math.nan
    verdict: str = ""
    equivalence: str = ""
    decision: str = ""             # "better", "worse", "not separable" or "cannot test"
    equivalent: bool | None = None # TOST verdict (None: no margin, or untestable)


@dataclass
class Comparison:
    task: str
    seed: int
    unit: str
    metric: str
    episode_hash: str
    alpha: float
    encoders: list[str]
    summaries: dict[str, dict[str, Any]]     # encoder -> record summary (mean, CI, n)
    records: dict[str, str]                  # encoder -> record path or timestamp
    pairs: list[PairResult]
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict (NaN and infinities become null)."""
        return json_safe(asdict(self))

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True, allow_nan=False)


def record_order_key(record: dict[str, Any]) -> tuple:
    """Newest last; ties broken by path, then content, so the choice never depends on input order."""
    return (str(record.get("timestamp", "")), str(record.get("_path", "")),
            json.dumps(record, sort_keys=True, default=str))


def _params_match(record: dict[str, Any], params: Mapping[str, Any] | None) -> bool:
    have = record.get("protocol", {}).get("params", {})
    return params is None or all(k in have and have[k] == v for k, v in params.items())


def _cell_args(params: Mapping[str, Any]) -> str:
    return " ".join(f"--param {shlex.quote(f'{k}={json.dumps(v) if isinstance(v, (list, dict)) else v}')}"
                    for k, v in sorted(params.items()))


def resolve_labels(records: Sequence[dict[str, Any]], task: str, names: Sequence[str]) -> list[str]:
    """Map each argument to a model label: a label as written, or an encoder name that has exactly
    one model (identity) among the task's records. UsageError (exit 2) with a suggestion otherwise."""
    import difflib

    from asc_bench.evaluation.records import identity_key, record_label

    labels = {record_label(r) for r in records}
    aliases = {str(r["encoder"].get("label")): record_label(r) for r in records if r["encoder"].get("label")}
    out = []
    for name in names:
        if name in labels:
            out.append(name)
            continue
        if name in aliases:
            out.append(aliases[name])
            continue
        models = {identity_key(r): record_label(r) for r in records if r["encoder"]["name"] == name}
        if len(models) == 1:
            out.append(next(iter(models.values())))
            continue
        if len(models) > 1:
            others = [shlex.quote(x) for x in sorted(models.values())]
            raise UsageError(f"encoder {name!r} has {len(models)} models in the records of {task!r}: "
                             f"{', '.join(sorted(models.values()))}. Name them by label, e.g. "
                             f"`asc-bench compare --task {shlex.quote(task)} {' '.join(others[:2])}`.")
        known = sorted(labels | {r["encoder"]["name"] for r in records})
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UsageError(f"no model {name!r} in the records of task {task!r}.{hint} Models with records: "
                         f"{', '.join(sorted(labels)) or 'none'}. Record it with `asc-bench run --encoder "
                         f"{shlex.quote(name)} --task {shlex.quote(task)}` (add --checkpoint PATH or "
                         f"--random-init where the encoder needs weights).")
    return out


def select_records(records: Sequence[dict[str, Any]], task: str, encoders: Sequence[str],
                   seed: int | None = None, params: Mapping[str, Any] | None = None
                   ) -> tuple[dict[str, dict[str, Any]], int, list[str]]:
    """The latest record per model for `task` (and `seed`, and records whose protocol params
    include `params`, e.g. {"k_shot": 5} to pick one cell of a sweep); returns
    (records keyed by label, seed, notes). `encoders` are labels or encoder names (see
    `resolve_labels`); records of several sweep cells need `params` to pick one."""
    from asc_bench.evaluation.records import check_labels, record_label

    if len(encoders) < 2:
        raise UsageError("compare needs at least two encoders")
    if len(set(encoders)) != len(encoders):
        raise UsageError(f"an encoder is named twice: {list(encoders)}")
    all_of_task = [r for r in records if r.get("task", {}).get("name") == task]
    of_task = [r for r in all_of_task if _params_match(r, params)]
    if not of_task:
        cells = sorted({json.dumps(r["protocol"].get("params", {}), sort_keys=True) for r in all_of_task})
        have = f" Cells recorded: {'; '.join(cells)}." if cells else ""
        raise AscBenchError(f"no result records for task {task!r}"
                            + (f" with params {dict(params)}" if params else "") + f".{have} Record one "
                            f"with `asc-bench run --encoder NAME --task {shlex.quote(task)}`.")
    labels = resolve_labels(of_task, task, encoders)
    if len(set(labels)) != len(labels):
        raise UsageError(f"two arguments name the same model: {list(encoders)} -> {labels}")
    check_labels(of_task, labels)
    by_enc = {e: [r for r in of_task if record_label(r) == e] for e in labels}
    cells: dict[str, dict[str, Any]] = {}
    for rs in by_enc.values():
        for r in rs:
            cp = {k: v for k, v in r["protocol"].get("params", {}).items() if not str(k).startswith("_")}
            cells[json.dumps(cp, sort_keys=True, default=str)] = cp
    if len(cells) > 1:
        varying = sorted({k for c in cells.values() for k in c
                          if len({json.dumps(x.get(k), sort_keys=True) for x in cells.values()}) > 1})
        options = [{k: c.get(k) for k in varying} for c in cells.values()]
        listed = "; ".join(sorted(_cell_args(o) for o in options))
        raise UsageError(f"the records of {task!r} cover {len(cells)} sweep cells (differing in "
                         f"{', '.join(varying)}): {listed}. Pick one, e.g. `asc-bench compare --task "
                         f"{shlex.quote(task)} {' '.join(shlex.quote(e) for e in labels)} "
                         f"{_cell_args(sorted(options, key=lambda o: json.dumps(o, sort_keys=True))[0])}`.")
    notes: list[str] = []
    if seed is None:
        common = set.intersection(*({r["seed"] for r in rs} for rs in by_enc.values()))
        if not common:
            seeds = {e: sorted({r["seed"] for r in rs}) for e, rs in by_enc.items()}
            raise AscBenchError(f"the encoders have no seed in common on {task!r}: {seeds}. "
                                f"Re-run one of them with --seed so the episodes match.")
        newest = {s: max(record_order_key(r) for rs in by_enc.values() for r in rs
                         if r["seed"] == s) for s in common}
        seed = max(common, key=lambda s: newest[s])
        if len(common) > 1:
            notes.append(f"seeds {sorted(common)} are available for every encoder; using seed "
                         f"{seed} (most recent). Pass --seed to choose.")
    chosen = {}
    for e, rs in by_enc.items():
        with_seed = [r for r in rs if r["seed"] == seed]
        if not with_seed:
            raise AscBenchError(f"encoder {e!r} has no record of {task!r} with seed {seed}; it "
                                f"has seeds {sorted({r['seed'] for r in rs})}. Run it with "
                                f"--seed {seed}.")
        chosen[e] = max(with_seed, key=record_order_key)
    return chosen, int(seed), notes


def check_pairable(chosen: dict[str, dict[str, Any]]) -> str:
    """The common episode hash, or AscBenchError explaining what differs and what to do."""
    hashes = {e: r["episode_hash"] for e, r in chosen.items()}
    if len(set(hashes.values())) == 1:
        return next(iter(hashes.values()))
    lines, causes = [], []
    for e, r in chosen.items():
        lines.append(f"  {e}: seed {r['seed']}, spec_hash {str(r['task'].get('spec_hash'))[:12]}, "
                     f"dataset fingerprint {str(r.get('dataset', {}).get('fingerprint'))[:12]}, "
                     f"params {json.dumps(r['protocol'].get('params', {}), sort_keys=True)}, "
                     f"episode_hash {r['episode_hash'][:12]}")
    vals = lambda f: {f(r) for r in chosen.values()}
    if len(vals(lambda r: r["seed"])) > 1:
        causes.append("the seeds differ: re-run with the same --seed")
    if len(vals(lambda r: str(r["task"].get("spec_hash")))) > 1:
        causes.append("the task spec changed between runs: re-run the older records with the "
                      "current task")
    if len(vals(lambda r: str(r.get("dataset", {}).get("fingerprint")))) > 1:
        causes.append("the dataset listings differ (other files, or files skipped as bad "
                      "audio): re-run on the same dataset copy")
    if len(vals(lambda r: json.dumps(r["protocol"].get("params", {}), sort_keys=True))) > 1:
        causes.append("the protocol params differ (--param overrides)")
    if not causes:
        causes.append("seed, spec and dataset agree, so the sampler changed: re-run all of them "
                      "with this version of asc-bench")
    raise AscBenchError("cannot pair these records, their episodes/folds differ (episode_hash):\n"
                        + "\n".join(lines) + "\nCause: " + "; ".join(causes) + ".")


def _once_per_clip(pred: Mapping[str, Any]) -> bool:
    idx = np.asarray(pred["index"])
    return idx.size > 0 and np.unique(idx).size == idx.size


def _mcnemar(rec_a: dict[str, Any], rec_b: dict[str, Any], unit: str) -> stats.McNemarResult | None:
    """Exact McNemar on per-clip correctness, only where each clip is predicted once (folds)."""
    pa, pb = rec_a.get("predictions"), rec_b.get("predictions")
    if unit != "fold" or not pa or not pb or list(pa["index"]) != list(pb["index"]):
        return None
    if not _once_per_clip(pa):
        return None
    return stats.mcnemar_exact(pa["correct"], pb["correct"])


def fold_ratio(record: dict[str, Any]) -> float | None:
    """n_test/n_train of a fold record (None when the record predates fold sizes)."""
    folds = record.get("folds") or {}
    if not folds.get("n_train") or not folds.get("n_test"):
        return None
    return stats.fold_size_ratio(folds["n_train"], folds["n_test"])


def _primary(unit: str, a: np.ndarray, b: np.ndarray, ratio: float | None
             ) -> stats.TestResult:
    if unit != "fold":
        return stats.paired_t(a, b)
    if ratio is None:
        return stats.TestResult(math.nan, math.nan, int(a.size),
                                "corrected-t (fold sizes missing from the record: re-run it "
                                "with this version)", float(np.mean(a - b)))
    return stats.corrected_t(a, b, ratio=ratio)


def _unit_intervals(rec_e: dict[str, Any], rec_r: dict[str, Any], mean_diff: float
                    ) -> list[Interval]:
    out = []
    for kind in ("class", "group"):
        ie = (rec_e.get("intervals") or {}).get(kind)
        ir = (rec_r.get("intervals") or {}).get(kind)
        if not ie or not ir or not ie.get("loo") or not ir.get("loo"):
            continue
        jk = stats.jackknife_diff(ie["loo"], ir["loo"], mean_diff)
        if jk is None:
            continue
        out.append(Interval(kind, ie["method"], ie["covers"], ie["conditions_on"], jk.low,
                            jk.high))
    return out


def _pair(task_unit: str, enc: str, ref: str, rec_e: dict[str, Any], rec_r: dict[str, Any],
          margin: float | None) -> PairResult:
    a = np.asarray(rec_e["scores"], dtype=np.float64)
    b = np.asarray(rec_r["scores"], dtype=np.float64)
    ratio = fold_ratio(rec_e) if task_unit == "fold" else None
    primary = _primary(task_unit, a, b, ratio)
    d_ci = stats.mean_ci(a - b)
    base = stats.INTERVALS["fold" if task_unit == "fold" else "episode"]
    intervals = [Interval("fold" if task_unit == "fold" else "episode", base["method"],
                          base["covers"], base["conditions_on"], d_ci.low, d_ci.high)]
    if task_unit != "fold":
        bs = stats.paired_bootstrap_ci(a, b)
        intervals.append(Interval("bootstrap", f"paired bootstrap percentile CI ({bs.n_boot} "
                                  f"resamples of the episodes, seed {bs.seed})",
                                  base["covers"], base["conditions_on"], bs.low, bs.high))
    intervals += _unit_intervals(rec_e, rec_r, d_ci.mean)
    pair = PairResult(
        encoder=enc, reference=ref, n=int(a.size), mean_encoder=float(a.mean()),
        mean_reference=float(b.mean()), mean_diff=d_ci.mean, ci_low=d_ci.low, ci_high=d_ci.high,
        p_t=stats.paired_t(a, b).p_value, p_wilcoxon=stats.wilcoxon(a, b).p_value,
        primary_test=primary.method, p_primary=primary.p_value,
        mcnemar=_mcnemar(rec_e, rec_r, task_unit), intervals=intervals, margin=margin)
    if margin is not None:
        pair.p_tost = stats.tost_paired(a, b, margin, ratio=ratio).p_value
        if task_unit == "fold" and ratio is None:
            pair.p_tost = math.nan
    return pair


def _points(metric: str) -> tuple[float, str]:
    return (100.0, " points") if metric == "accuracy" else (1.0, "")


def _verdict(pair: PairResult, alpha: float) -> str:
    if math.isnan(pair.p_primary_holm):
        why = pair.primary_test if "(" in pair.primary_test else f"{pair.primary_test}, n={pair.n}"
        return f"cannot test: {why}"
    if pair.p_primary_holm <= alpha:
        word = "better" if pair.mean_diff > 0 else "worse"
        wide = [iv.kind for iv in pair.intervals if iv.kind in ("class", "group")
                and math.isfinite(iv.low) and iv.low <= 0.0 <= iv.high]
        caveat = (f"; but the {' and '.join(wide)}-level interval includes 0: the difference "
                  f"may not carry over to other {' or '.join(k + 'es' if k == 'class' else k + 's' for k in wide)}"
                  if wide else "")
        return (f"{pair.encoder} is significantly {word} than {pair.reference} (primary "
                f"{pair.primary_test}, Holm over {pair.family_size} comparisons: "
                f"p={pair.p_primary_holm:.3g} <= {alpha:g}){caveat}")
    return (f"not separable at alpha={alpha:g} (primary {pair.primary_test}, Holm over "
            f"{pair.family_size} comparisons: p={pair.p_primary_holm:.3g})")


def _equivalence(pair: PairResult, alpha: float, scale: float, unit: str) -> str:
    if pair.margin is None:
        return ""
    m = f"±{pair.margin * scale:g}{unit}"
    if math.isnan(pair.p_tost_holm):
        return f"equivalence within {m}: cannot test"
    if pair.p_tost_holm <= alpha:
        return f"equivalent within {m} (TOST, Holm p={pair.p_tost_holm:.3g} <= {alpha:g})"
    return f"not shown equivalent within {m} (TOST, Holm p={pair.p_tost_holm:.3g})"


def load_comparable(records: Sequence[dict[str, Any]], task: str, encoders: Sequence[str],
                    seed: int | None = None, params: Mapping[str, Any] | None = None
                    ) -> tuple[dict[str, dict[str, Any]], int, str, list[str]]:
    """Record loading and selection for one task: (chosen records, seed, episode hash, notes)."""
    chosen, seed, notes = select_records(records, task, encoders, seed, params)
    return chosen, seed, check_pairable(chosen), notes


def compare_family(records: Sequence[dict[str, Any]], tasks: Sequence[str],
                   encoders: Sequence[str], *, seed: int | None = None, alpha: float = 0.05,
                   all_pairs: bool = False, params: Mapping[str, Any] | None = None,
                   margin: float | None = None) -> list[Comparison]:
    """Compare `encoders` on every task of `tasks`; Holm over all their comparisons.

    `margin` (metric units, e.g. 0.01 = 1 point of accuracy) adds the TOST equivalence test."""
    if not tasks:
        raise UsageError("compare needs at least one --task")
    if len(set(tasks)) != len(tasks):
        raise UsageError(f"a task is named twice: {list(tasks)}")
    if margin is not None and not margin > 0:
        raise UsageError(f"--margin must be > 0, got {margin}")
    out: list[Comparison] = []
    for task in tasks:
        chosen, task_seed, ep_hash, notes = load_comparable(records, task, encoders, seed, params)
        labels = list(chosen)                     # the arguments resolved to model labels, in order
        plan = ([(labels[j], labels[i]) for i in range(len(labels))
                 for j in range(i + 1, len(labels))] if all_pairs
                else [(e, labels[0]) for e in labels[1:]])
        first = chosen[labels[0]]
        unit = first["protocol"].get("unit", "episode")
        pairs = [_pair(unit, enc, ref, chosen[enc], chosen[ref], margin) for enc, ref in plan]
        if unit == "fold" and any(fold_ratio(chosen[e]) is None for e in labels):
            notes.append("fold sizes are missing from a record: the corrected t-test needs them; "
                         "re-run the records with this version")
        if any(r.get("predictions") for r in chosen.values()) and \
                any(p.mcnemar is None for p in pairs):
            notes.append("McNemar is shown only where each clip is predicted once (fold test "
                         "sets) and both records hold predictions for the same clips")
        out.append(Comparison(
            task=task, seed=task_seed, unit=unit,
            metric=first["protocol"].get("metric", "accuracy"), episode_hash=ep_hash,
            alpha=alpha, encoders=labels,
            summaries={e: stats.mean_ci(r["scores"]).to_summary() for e, r in chosen.items()},
            records={e: str(r.get("_path") or r.get("timestamp", "")) for e, r in chosen.items()},
            pairs=pairs, notes=notes))
    every = [p for c in out for p in c.pairs]
    size = int(sum(not math.isnan(p.p_primary) for p in every))
    for p, adj, adj_tost in zip(every, stats.holm([p.p_primary for p in every]),
                                stats.holm([p.p_tost for p in every])):
        p.p_primary_holm, p.p_tost_holm, p.family_size = float(adj), float(adj_tost), size
    for c in out:
        scale, unit_text = _points(c.metric)
        for p in c.pairs:
            p.verdict = _verdict(p, alpha)
            p.equivalence = _equivalence(p, alpha, scale, unit_text)
            p.decision = ("cannot test" if math.isnan(p.p_primary_holm) else "not separable"
                          if p.p_primary_holm > alpha else "better" if p.mean_diff > 0 else "worse")
            p.equivalent = (None if p.margin is None or math.isnan(p.p_tost_holm)
                            else bool(p.p_tost_holm <= alpha))
        if len(out) > 1:
            c.notes.append(f"Holm family: {size} testable comparisons over {len(out)} tasks")
    return out


def compare_records(records: Sequence[dict[str, Any]], task: str, encoders: Sequence[str], *,
                    seed: int | None = None, alpha: float = 0.05, all_pairs: bool = False,
                    params: Mapping[str, Any] | None = None,
                    margin: float | None = None) -> Comparison:
    """Pick, check and compare records of one task (see the module docstring)."""
    return compare_family(records, [task], encoders, seed=seed, alpha=alpha,
                          all_pairs=all_pairs, params=params, margin=margin)[0]


def format_comparison(cmp: Comparison) -> str:
    """A plain-text rendering; numbers in % points for accuracy."""
    scale = 100.0 if cmp.metric == "accuracy" else 1.0
    unit = " pp" if cmp.metric == "accuracy" else ""
    lines = [f"task {cmp.task}, seed {cmp.seed}, {cmp.summaries[cmp.encoders[0]]['n']} "
             f"{cmp.unit}s, episode hash {cmp.episode_hash[:12]}"]
    for e in cmp.encoders:
        s = cmp.summaries[e]
        hw = s["half_width"]
        lines.append(f"  {e}: {s['mean'] * scale:.2f}"
                     + (f" ± {hw * scale:.2f}" if math.isfinite(hw) else " (n=1)"))
    for p in cmp.pairs:
        lines.append(f"  {p.encoder} - {p.reference}: {p.mean_diff * scale:+.2f}{unit}")
        lines.append(f"    primary: {p.primary_test}, p={p.p_primary:.3g}, Holm "
                     f"p={p.p_primary_holm:.3g} ({p.family_size} comparisons)")
        second = [f"Wilcoxon p={p.p_wilcoxon:.3g}"]
        if cmp.unit == "fold":
            second.append(f"plain paired t p={p.p_t:.3g} (ignores overlapping training sets)")
        if p.mcnemar is not None:
            second.append(f"exact McNemar p={p.mcnemar.p_value:.3g} ({p.mcnemar.n01}/"
                          f"{p.mcnemar.n10} discordant clips)")
        lines.append("    secondary (unadjusted): " + "; ".join(second))
        for iv in p.intervals:
            rng = (f"[{iv.low * scale:+.2f}, {iv.high * scale:+.2f}]"
                   if math.isfinite(iv.low) else "[n/a]")
            lines.append(f"    95% {iv.kind} interval {rng}: {iv.method}; covers {iv.covers}; "
                         f"conditions on {iv.conditions_on}")
        lines.append(f"    -> {p.verdict}")
        if p.equivalence:
            lines.append(f"    -> {p.equivalence}")
    lines += [f"  note: {n}" for n in cmp.notes]
    return "\n".join(lines)
