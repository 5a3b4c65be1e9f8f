"""Markdown leaderboard and plots from result records.

Tables: one per `task.group` (sorted). A column is a task; if the records hold several protocol
param variants of one task (e.g. a k_shot sweep), each variant is its own column, labelled with the
params that differ (the footnote lists all). Rows are models, keyed by their label (name + weights +
options, `asc_bench.evaluation.records.record_label`; random-weight rows always say "random init";
one label naming two models is an error), sorted by label, with parameter count and MACs per second
of audio where known. For every (column, encoder) the latest record is used (timestamp, then path,
then content: independent of the input order). Cells: accuracy in %, mean ± half-width of ONE
declared 95% interval, 1 decimal: `interval="class"` (default) prints the delete-one-class
jackknife interval (it covers the choice of classes in the pool, see
asc_bench.evaluation.stats) where the record carries it and the episode/fold Student-t CI
otherwise; `interval="episode"` always prints the episode/fold CI. Each column's footnote says
which interval its cells show.

Marks: bold = highest mean of the column (all exact ties bold). † = not separable from the best
at alpha: the primary test of the unit (paired t over episodes; Nadeau-Bengio corrected t over
folds) of the entry's scores against the best's, Holm-adjusted over the column's testable
comparisons, adjusted p > alpha. It does NOT say "tied": only that these scores cannot tell the
two apart. With `margin` (points), ≡ = equivalent to the best within ±margin (TOST with the
same standard error, Holm over the column). Only entries whose episode_hash equals the best's
are testable; ‡ marks the others and the untestable ones (different episodes/folds, a single
score, zero variance of the difference, fold sizes unknown), footnoted. The output contains no
timestamps and every list is sorted, so the same records always give byte-identical markdown.

Plots (matplotlib, Agg canvas, PNG): accuracy against k_shot and against n_way for every task
whose records differ only in that param, and accuracy against parameter count per group.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from asc_bench.evaluation import stats
from asc_bench.evaluation.compare import record_order_key

ALPHA = 0.05
DAGGER, UNPAIRED, EQUIV = "†", "‡", "≡"
INTERVAL_CHOICES = ("class", "episode")


@dataclass
class Column:
    group: str
    task: str
    params: dict[str, Any]
    label: str
    entries: dict[str, dict[str, Any]]      # encoder -> latest record

    @property
    def key(self) -> tuple[str, str]:
        return self.task, _canon(self.params)


def _canon(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


def _public_params(record: dict[str, Any]) -> dict[str, Any]:
    params = record.get("protocol", {}).get("params", {}) or {}
    return {k: v for k, v in params.items() if not str(k).startswith("_")}


def _fmt_value(v: Any) -> str:
    return json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else str(v)


def select_cells(records: Iterable[dict[str, Any]], params: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The records whose protocol params include `params` (all of them when empty)."""
    if not params:
        return list(records)
    return [r for r in records if all(k in _public_params(r) and _public_params(r)[k] == v
                                      for k, v in params.items())]


def build_columns(records: Iterable[dict[str, Any]]) -> list[Column]:
    """Columns sorted by (group, task, params); latest record per model label in each."""
    from asc_bench.evaluation.records import record_label

    latest: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in records:
        key = (r["task"]["name"], _canon(_public_params(r)), record_label(r))
        if key not in latest or record_order_key(r) > record_order_key(latest[key]):
            latest[key] = r
    cols: dict[tuple[str, str], Column] = {}
    for (task, pkey, enc), r in sorted(latest.items()):
        col = cols.get((task, pkey))
        if col is None:
            col = cols[(task, pkey)] = Column(str(r["task"].get("group") or "ungrouped"), task,
                                              _public_params(r), task, {})
        col.entries[enc] = r
    variants: dict[str, list[Column]] = defaultdict(list)
    for col in cols.values():
        variants[col.task].append(col)
    for task, vs in variants.items():
        if len(vs) > 1:
            keys = sorted({k for v in vs for k in v.params})
            differ = [k for k in keys if len({_canon(v.params.get(k)) for v in vs}) > 1]
            for v in vs:
                v.label = f"{task} ({', '.join(f'{k}={_fmt_value(v.params.get(k))}' for k in differ)})"
    return sorted(cols.values(), key=lambda c: (c.group, c.task, c.label, _canon(c.params)))


@dataclass
class Cell:
    mean: float
    half_width: float
    n: int
    bold: bool = False
    mark: str = ""
    p_holm: float = math.nan
    interval: str = "episode"       # which interval half_width is: "episode", "fold" or "class"
    p_tost_holm: float = math.nan


def _cell_interval(record: dict[str, Any], scores: np.ndarray, interval: str
                   ) -> tuple[float, str]:
    unit = "fold" if record["protocol"].get("unit") == "fold" else "episode"
    if interval == "class":
        iv = (record.get("intervals") or {}).get("class")
        if iv and iv.get("half_width") is not None:
            return float(iv["half_width"]), "class"
    return stats.mean_ci(scores).half_width, unit


def column_cells(col: Column, alpha: float = ALPHA, *, interval: str = "class",
                 margin: float | None = None) -> dict[str, Cell]:
    """Means, intervals, bold and marks for one column (see the module docstring); `margin` in
    metric units (0.01 = 1 point)."""
    from asc_bench.evaluation.compare import fold_ratio

    scores = {e: np.asarray(r["scores"], dtype=np.float64) for e, r in col.entries.items()}
    cells = {}
    for e in sorted(scores):
        ci = stats.mean_ci(scores[e])
        hw, kind = _cell_interval(col.entries[e], scores[e], interval)
        cells[e] = Cell(ci.mean, hw, ci.n, interval=kind)
    top = max(c.mean for c in cells.values())
    best = sorted(e for e, c in cells.items() if c.mean == top)
    for e in best:
        cells[e].bold = True
    ref = best[0]
    testable, p_raw, p_tost = [], [], []
    for e in sorted(cells):
        if cells[e].bold:
            continue
        same = col.entries[e]["episode_hash"] == col.entries[ref]["episode_hash"]
        p, pt = math.nan, math.nan
        if same:
            if col.entries[e]["protocol"].get("unit") == "fold":
                ratio = fold_ratio(col.entries[e])
                if ratio is not None:
                    p = stats.corrected_t(scores[e], scores[ref], ratio=ratio).p_value
            else:
                ratio = None
                p = stats.paired_t(scores[e], scores[ref]).p_value
            if margin is not None and not math.isnan(p):
                pt = stats.tost_paired(scores[e], scores[ref], margin, ratio=ratio).p_value
        if math.isnan(p):
            cells[e].mark = UNPAIRED
        else:
            testable.append(e)
            p_raw.append(p)
            p_tost.append(pt)
    for e, p, pt in zip(testable, stats.holm(p_raw), stats.holm(p_tost)):
        cells[e].p_holm, cells[e].p_tost_holm = float(p), float(pt)
        marks = DAGGER if p > alpha else ""
        if margin is not None and pt <= alpha:
            marks += EQUIV
        cells[e].mark = marks
    return cells


def fmt_count(n: Any) -> str:
    """A parameter or MAC count as the tables print it: 85.6M, 2.5G, – when unknown."""
    if not isinstance(n, (int, float)) or isinstance(n, bool) or n < 0:
        return "–"
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(int(n))


def _fmt_cell(cell: Cell | None) -> str:
    if cell is None:
        return "–"
    text = (f"{cell.mean * 100:.1f} ± {cell.half_width * 100:.1f}"
            if math.isfinite(cell.half_width) else f"{cell.mean * 100:.1f} (n=1)")
    if cell.bold:
        text = f"**{text}**"
    return text + (f" {cell.mark}" if cell.mark else "")


def md_cell(text: Any) -> str:
    """Text safe inside a markdown table cell (pipes escaped, one line)."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _encoder_facts(cols: Sequence[Column], enc: str) -> tuple[Any, Any]:
    recs = sorted((r for c in cols for e, r in c.entries.items() if e == enc), key=record_order_key)
    latest = recs[-1]["encoder"]
    return latest.get("params"), latest.get("macs_per_s")


_INTERVAL_TEXT = {"class": "delete-one-class jackknife 95% interval (covers the choice of classes)",
                  "episode": "Student-t 95% CI over episodes (conditions on the pool of classes)",
                  "fold": "Student-t 95% CI over folds (conditions on the dataset and its folds)"}


def _footnote(num: int, col: Column, cells: Mapping[str, Cell] | None = None) -> str:
    recs = [col.entries[e] for e in sorted(col.entries)]
    r0 = recs[0]
    units = sorted({(r["protocol"].get("unit", "episode"), len(r["scores"])) for r in recs})
    unit_text = ", ".join(f"{n} {u}{'s' if n != 1 else ''}" for u, n in units)
    seeds = sorted({r["seed"] for r in recs})
    hashes = sorted({r["episode_hash"][:12] for r in recs})
    params = ", ".join(f"{k}={_fmt_value(v)}" for k, v in sorted(col.params.items()))
    return (f"[{num}] {md_cell(col.label)}: dataset {md_cell(r0['task'].get('dataset', '?'))}, protocol "
            f"{md_cell(r0['protocol'].get('name') or r0['task'].get('protocol'))} ({md_cell(params)}); "
            f"{unit_text}; seed {', '.join(map(str, seeds))}; episode hash "
            f"{', '.join(hashes)}" + _interval_note(cells) + ".")


def _interval_note(cells: Mapping[str, Cell] | None) -> str:
    if not cells:
        return ""
    kinds = sorted({c.interval for c in cells.values()})
    if len(kinds) == 1:
        return f"; ± = {_INTERVAL_TEXT[kinds[0]]}"
    parts = [f"{_INTERVAL_TEXT[k]} for {', '.join(md_cell(e) for e in sorted(cells) if cells[e].interval == k)}"
             for k in kinds]
    return "; ± = " + "; ".join(parts)


def render_group(group: str, cols: Sequence[Column], alpha: float = ALPHA, *,
                 interval: str = "class", margin: float | None = None) -> list[str]:
    encoders = sorted({e for c in cols for e in c.entries})
    cells = [column_cells(c, alpha, interval=interval, margin=margin) for c in cols]
    header = ["Encoder", "Params", "GMAC/s"] + [f"{md_cell(c.label)} [{i + 1}]"
                                                for i, c in enumerate(cols)]
    lines = [f"## {md_cell(group)}", "", "| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] + ["--:"] * (len(header) - 1)) + "|"]
    for enc in encoders:
        n_params, macs = _encoder_facts(cols, enc)
        macs_text = f"{macs / 1e9:.2f}" if isinstance(macs, (int, float)) and macs > 0 else "–"
        row = [md_cell(enc), fmt_count(n_params), macs_text] + [_fmt_cell(cs.get(enc))
                                                               for cs in cells]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines += [_footnote(i + 1, c, cs) for i, (c, cs) in enumerate(zip(cols, cells))]
    if any(cell.mark == UNPAIRED for cs in cells for cell in cs.values()):
        lines.append(f"{UNPAIRED} Not tested against the best: its episodes/folds differ from the "
                     f"best's (episode hash; other seed, spec or dataset listing), it has a "
                     f"single score, its difference to the best has no variance (no variance: "
                     f"cannot test), or its record lacks the fold sizes the corrected t needs.")
    lines.append("")
    return lines


def render_leaderboard(records: Sequence[dict[str, Any]], alpha: float = ALPHA, *,
                       interval: str = "class", margin: float | None = None) -> str:
    """The leaderboard markdown (deterministic: see the module docstring). `margin` is in metric
    units (0.01 = 1 point of accuracy)."""
    from asc_bench.api import UsageError
    from asc_bench.evaluation.records import check_labels

    check_labels(records)
    if interval not in INTERVAL_CHOICES:
        raise UsageError(f"interval must be one of {', '.join(INTERVAL_CHOICES)}, got {interval!r}")
    if margin is not None and not margin > 0:
        raise UsageError(f"margin must be > 0, got {margin}")
    cols = build_columns(records)
    shown = ("the delete-one-class jackknife 95% interval where the record has it (it covers "
             "the choice of classes in the pool), else the Student-t 95% CI over the episodes "
             "or folds" if interval == "class" else
             "the Student-t 95% CI over the per-episode or per-fold scores (it conditions on "
             "the pool of classes and clips)")
    equiv = (f" {EQUIV}: equivalent to the best within ±{margin * 100:g} points (TOST, "
             f"Holm-adjusted across the column, alpha = {alpha:g})." if margin is not None else "")
    out = ["# asc-bench leaderboard", "",
           f"Cells: accuracy in %, mean ± half-width of {shown}, 1 decimal (episode/fold CI: "
           f"{stats.CI_FORMULA}); each column's footnote names its interval. **Bold**: best "
           f"mean of the column. {DAGGER}: not separable from the best at alpha = {alpha:g} "
           f"(primary test on the same episodes/folds: paired t over episodes, Nadeau-Bengio "
           f"corrected t over folds; Holm-adjusted across the column); it does not mean tied."
           f"{equiv} Params: encoder parameters; GMAC/s: multiply-accumulates per second of "
           f"audio (– where unknown).", ""]
    if not cols:
        return "\n".join(out + ["No result records.", ""])
    groups: dict[str, list[Column]] = defaultdict(list)
    for c in cols:
        groups[c.group].append(c)
    for g in sorted(groups):
        out += render_group(g, groups[g], alpha, interval=interval, margin=margin)
    return "\n".join(out)


# ------------------------------------------------------------------------------------------ plots
def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _sweeps(cols: Sequence[Column], param: str) -> list[tuple[str, list[Column]]]:
    """(name, columns) for each task whose variants differ only in `param` (>= 2 int values)."""
    by_rest: dict[tuple[str, str], list[Column]] = defaultdict(list)
    for c in cols:
        v = c.params.get(param)
        if isinstance(v, int) and not isinstance(v, bool):
            rest = {k: x for k, x in c.params.items() if k != param}
            by_rest[(c.task, _canon(rest))].append(c)
    per_task: dict[str, int] = defaultdict(int)
    found = [(k, sorted(v, key=lambda c: c.params[param])) for k, v in sorted(by_rest.items())
             if len(v) >= 2]
    for (task, _), _v in found:
        per_task[task] += 1
    out = []
    for (task, rest), vs in found:
        suffix = "" if per_task[task] == 1 else "_" + hashlib.sha256(rest.encode()).hexdigest()[:8]
        out.append((f"{_safe(task)}__{param}{suffix}", vs))
    return out


def _new_figure(title: str, xlabel: str):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (%) ± 95% CI")
    ax.grid(True, alpha=0.3)
    return fig, ax


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": None})
    return path


def write_plots(records: Sequence[dict[str, Any]], out_dir: str | Path) -> list[Path]:
    """Write the sweep and parameter-count plots as PNG files; returns their paths (sorted)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cols = build_columns(records)
    written = []
    for param, xlabel in (("k_shot", "K (shots per class)"), ("n_way", "N (ways)")):
        for name, vs in _sweeps(cols, param):
            fixed = {k: v for k, v in vs[0].params.items() if k != param}
            fixed_text = ", ".join(f"{k}={_fmt_value(v)}" for k, v in sorted(fixed.items()) if v is not None)
            fig, ax = _new_figure(f"{vs[0].task}: accuracy against {param}\n({fixed_text})" if fixed_text
                                  else f"{vs[0].task}: accuracy against {param}", xlabel)
            for enc in sorted({e for c in vs for e in c.entries}):
                pts = [(c.params[param], stats.mean_ci(c.entries[enc]["scores"])) for c in vs
                       if enc in c.entries]
                ax.errorbar([x for x, _ in pts], [ci.mean * 100 for _, ci in pts],
                            yerr=[np.nan_to_num(ci.half_width) * 100 for _, ci in pts],
                            marker="o", capsize=3, label=enc)
            ax.set_xticks(sorted({c.params[param] for c in vs}))
            ax.legend(fontsize=8)
            written.append(_save(fig, out / f"{name}.png"))
    groups: dict[str, list[Column]] = defaultdict(list)
    for c in cols:
        groups[c.group].append(c)
    for g in sorted(groups):
        fig, ax = _new_figure(f"{g}: accuracy against parameter count", "parameters")
        plotted = False
        for c in groups[g]:
            pts = []
            for enc in sorted(c.entries):
                n_params = c.entries[enc]["encoder"].get("params")
                if isinstance(n_params, (int, float)) and n_params > 0:
                    pts.append((float(n_params), stats.mean_ci(c.entries[enc]["scores"]), enc))
            if not pts:
                continue
            plotted = True
            ax.errorbar([p for p, _, _ in pts], [ci.mean * 100 for _, ci, _ in pts],
                        yerr=[np.nan_to_num(ci.half_width) * 100 for _, ci, _ in pts],
                        marker="o", linestyle="none", capsize=3, label=c.label)
            for p, ci, enc in pts:
                ax.annotate(enc, (p, ci.mean * 100), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
        if plotted:
            ax.set_xscale("log")
            ax.legend(fontsize=8)
            written.append(_save(fig, out / f"{_safe(g)}__params.png"))
    return sorted(written)
