"""Paired comparison of encoders on one task (`asc-bench compare`).

Record choice: for each encoder the latest record (timestamp, then path) of the task with the
chosen seed. Without an explicit seed, the seed is the one every encoder has a record for; if
several qualify, the one with the most recent record (a note says so).

Pairing: two records pair only when their `episode_hash` matches (same episodes or folds, hence
the same number of scores in the same order); otherwise AscBenchError says which seeds, spec hashes
or dataset fingerprints differ and how to fix it.

Family: every encoder against the first (the reference), or every pair with `all_pairs=True`.
For each pair, with d = scores(encoder) - scores(reference): mean difference and its Student-t
95% CI (asc_bench.evaluation.stats.mean_ci on d), paired t p, Wilcoxon p, both Holm-adjusted across the
family, and the exact McNemar test (also Holm-adjusted) when both records hold per-clip
predictions for the same clips. The verdict uses the Holm-adjusted paired t p at level alpha.
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
class PairResult:
    encoder: str
    reference: str
    n: int
    mean_encoder: float
    mean_reference: float
    mean_diff: float               # mean(encoder - reference)
    ci_low: float                  # Student-t CI of the mean difference
    ci_high: float
    p_t: float
    p_wilcoxon: float
    p_t_holm: float = math.nan
    p_wilcoxon_holm: float = math.nan
    mcnemar: stats.McNemarResult | None = None
    p_mcnemar_holm: float = math.nan
    verdict: str = ""


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


def _mcnemar(rec_a: dict[str, Any], rec_b: dict[str, Any]) -> stats.McNemarResult | None:
    pa, pb = rec_a.get("predictions"), rec_b.get("predictions")
    if not pa or not pb:
        return None
    if list(pa["index"]) != list(pb["index"]):
        return None
    return stats.mcnemar_exact(pa["correct"], pb["correct"])


def _verdict(pair: PairResult, alpha: float) -> str:
    if math.isnan(pair.p_t_holm):
        extra = (f"; McNemar p={pair.mcnemar.p_value:.3g}" if pair.mcnemar is not None else "")
        return f"not testable with a paired t-test (n={pair.n}){extra}"
    if pair.p_t_holm <= alpha:
        word = "better" if pair.mean_diff > 0 else "worse"
        return (f"{pair.encoder} is significantly {word} than {pair.reference} "
                f"(Holm-adjusted paired t p={pair.p_t_holm:.3g} <= {alpha:g})")
    return (f"no significant difference (Holm-adjusted paired t p={pair.p_t_holm:.3g} > "
            f"{alpha:g})")


def compare_records(records: Sequence[dict[str, Any]], task: str, encoders: Sequence[str], *,
                    seed: int | None = None, alpha: float = 0.05, all_pairs: bool = False,
                    params: Mapping[str, Any] | None = None) -> Comparison:
    """Pick, check and compare records (see the module docstring)."""
    chosen, seed, notes = select_records(records, task, encoders, seed, params)
    encoders = list(chosen)                       # labels, in the order given
    ep_hash = check_pairable(chosen)
    scores = {e: np.asarray(r["scores"], dtype=np.float64) for e, r in chosen.items()}
    plan = ([(encoders[i], encoders[j]) for i in range(len(encoders))
             for j in range(i + 1, len(encoders))] if all_pairs
            else [(e, encoders[0]) for e in encoders[1:]])
    if all_pairs:
        plan = [(b, a) for a, b in plan]          # report later encoder - earlier encoder
    pairs = []
    for enc, ref in plan:
        d_ci = stats.mean_ci(scores[enc] - scores[ref])
        pairs.append(PairResult(
            encoder=enc, reference=ref, n=int(scores[enc].size),
            mean_encoder=float(scores[enc].mean()), mean_reference=float(scores[ref].mean()),
            mean_diff=d_ci.mean, ci_low=d_ci.low, ci_high=d_ci.high,
            p_t=stats.paired_t(scores[enc], scores[ref]).p_value,
            p_wilcoxon=stats.wilcoxon(scores[enc], scores[ref]).p_value,
            mcnemar=_mcnemar(chosen[enc], chosen[ref])))
    for attr, src in (("p_t_holm", lambda p: p.p_t), ("p_wilcoxon_holm", lambda p: p.p_wilcoxon),
                      ("p_mcnemar_holm",
                       lambda p: p.mcnemar.p_value if p.mcnemar is not None else math.nan)):
        for p, adj in zip(pairs, stats.holm([src(p) for p in pairs])):
            setattr(p, attr, float(adj))
    for p in pairs:
        p.verdict = _verdict(p, alpha)
    if any(p.mcnemar is None for p in pairs) and any(r.get("predictions") for r in chosen.values()):
        notes.append("McNemar is left out where the two records lack predictions for the same "
                     "clips")
    first = chosen[encoders[0]]
    return Comparison(
        task=task, seed=seed, unit=first["protocol"].get("unit", "episode"),
        metric=first["protocol"].get("metric", "accuracy"), episode_hash=ep_hash, alpha=alpha,
        encoders=list(encoders),
        summaries={e: stats.mean_ci(scores[e]).to_summary() for e in encoders},
        records={e: str(r.get("_path") or r.get("timestamp", "")) for e, r in chosen.items()},
        pairs=pairs, notes=notes)


def format_comparison(cmp: Comparison) -> str:
    """A plain-text rendering (the CLI may use rich instead); numbers in % points for accuracy."""
    scale, unit = (100.0, " pp") if cmp.metric == "accuracy" else (1.0, "")
    lines = [f"task {cmp.task}, seed {cmp.seed}, {cmp.summaries[cmp.encoders[0]]['n']} "
             f"{cmp.unit}s, episode hash {cmp.episode_hash[:12]}"]
    for e in cmp.encoders:
        s = cmp.summaries[e]
        hw = s["half_width"]
        lines.append(f"  {e}: {s['mean'] * scale:.2f}"
                     + (f" ± {hw * scale:.2f}" if math.isfinite(hw) else " (n=1)"))
    for p in cmp.pairs:
        mc = (f", McNemar p={p.mcnemar.p_value:.3g} (Holm {p.p_mcnemar_holm:.3g}, "
              f"{p.mcnemar.n01}/{p.mcnemar.n10} discordant)" if p.mcnemar is not None else "")
        ci = (f"[{p.ci_low * scale:+.2f}, {p.ci_high * scale:+.2f}]" if math.isfinite(p.ci_low)
              else "[n/a]")
        lines.append(f"  {p.encoder} - {p.reference}: {p.mean_diff * scale:+.2f}{unit} "
                     f"95% CI {ci}, paired t p={p.p_t:.3g} (Holm {p.p_t_holm:.3g}), Wilcoxon "
                     f"p={p.p_wilcoxon:.3g} (Holm {p.p_wilcoxon_holm:.3g}){mc}\n    -> {p.verdict}")
    lines += [f"  note: {n}" for n in cmp.notes]
    return "\n".join(lines)
