"""`asc-bench bench`: run every (model, task) cell of a suite, resumably, with checks up front.

Order of work and what it guarantees:

1. **Checks, all cells, before any embedding.** For every cell: the task resolves, its protocol and the
   model's encoder are registered, the weights are usable (checkpoint file present, or random/none where
   allowed), the device exists, the dataset lists (metadata only, no audio) and the protocol accepts the
   listing: it is dry-run on 2-d random embeddings with its episode/draw count cut to 2 (sampling
   depends only on params, seed and labels, so a class pool too small for the episodes fails here).
   Any problem stops the bench before embedding, listing every problem (``keep_going`` runs the rest).
2. **Resume.** A cell whose record file exists, parses, and matches the cell (suite, label, encoder,
   checkpoint sha256, random init, options, task spec hash with overrides, seed, dataset listing
   fingerprint) is skipped; ``force`` reruns it. Records are written atomically, so a killed bench leaves
   finished cells valid and unfinished ones absent.
3. **Run.** Cells run in suite order (models, then columns), so one model's columns on the same data hit
   the embedding cache the first one filled (the cache key is the encoder identity, crop, sample rate
   and files fingerprint: identical for columns that share dataset, options and crop). A failing cell is
   reported and the others continue. The summary counts done / skipped / failed.

The seam to the rest of asc-bench is two functions: `run_cell` (runs one cell and writes its record) and
`load_cell_record` (the valid record of a cell, or None).
"""
from __future__ import annotations

import contextlib
import io
import re
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from asc_bench.api import AscBenchError, EvalData, ListingInfo, UsageError, clip_groups
from asc_bench.evaluation.suites import Cell, Suite, SuiteModel

# The dry run keeps the protocol's sampling and checks but not its cost: episode/draw counts cut to 2, a
# probe's C grid cut to its first value and its solver to 20 iterations (on 2-d random features).
DRY_RUN_CUTS = {"episodes": 2, "draws": 2, "max_iter": 20}
SOLVER_PROTOCOLS = ("linear-probe", "fewshot-logistic")


@dataclass
class BenchSettings:
    results_dir: str | None = None          # None: the default results folder (as for `run`)
    cache_dir: str | None = None
    data_roots: Mapping[str, str] = field(default_factory=dict)      # dataset name -> root
    device: str = "cpu"
    batch_size: int = 16
    seed: int | None = None
    force: bool = False
    keep_going: bool = False
    plugins: tuple[str, ...] = ()
    command: str | None = None              # recorded in every cell's provenance

    def __post_init__(self) -> None:
        if self.results_dir is None:
            from asc_bench.evaluation.records import default_results_dir

            self.results_dir = str(default_results_dir())


@dataclass
class CellPlan:
    """A checked cell: what to run and what a valid record must match."""

    cell: Cell
    spec_hash: str = ""
    dataset: str = ""
    listing_fingerprint: str = ""
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    seed: int = 0
    problem: str = ""


@dataclass
class CellOutcome:
    cell_id: str
    status: str                  # done | skipped | failed
    message: str = ""
    record_path: str = ""
    mean: float | None = None
    half_width: float | None = None


@dataclass
class BenchReport:
    suite: str
    outcomes: list[CellOutcome]

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def ok(self) -> bool:
        return self.count("failed") == 0


# ------------------------------------------------------------------------------------------ identity
def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("_") or "_"


def cell_record_path(results_dir: str | Path, cell: Cell) -> Path:
    """`<results>/suites/<suite>/<label>/<column>.json`: one file per cell, so resume is a lookup."""
    return (Path(results_dir) / "suites" / safe_name(cell.suite) / safe_name(cell.model.label)
            / f"{safe_name(cell.column.label)}.json")


def cell_identity(plan: CellPlan) -> dict[str, Any]:
    """What a record must match to stand for this cell (stored in the record as `suite`)."""
    m = plan.cell.model
    return {"name": plan.cell.suite, "model": m.label, "column": plan.cell.column.label,
            "encoder": m.encoder, "checkpoint_sha256": plan.checkpoint_sha256, "random_init": m.random_init,
            "options": dict(m.options), "task": plan.cell.column.task, "overrides": dict(plan.cell.column.params),
            "spec_hash": plan.spec_hash, "seed": plan.seed, "listing_fingerprint": plan.listing_fingerprint}


# ------------------------------------------------------------------------------------------ the seam
def run_cell(plan: CellPlan, settings: BenchSettings) -> dict[str, Any]:
    """Run one cell through `asc_bench.runner.run_task` and write its record at `cell_record_path`."""
    from asc_bench.atomic import atomic_write_json
    from asc_bench.evaluation.records import seal
    from asc_bench.runner import run_task

    cell = plan.cell
    record = run_task(cell.model.encoder, cell.column.task, plugins=settings.plugins,
                      data_root=settings.data_roots.get(plan.dataset), cache_dir=settings.cache_dir,
                      seed=settings.seed, overrides=dict(cell.column.params), checkpoint=plan.checkpoint,
                      random_init=cell.model.random_init, encoder_options=dict(cell.model.options),
                      device=settings.device, batch_size=settings.batch_size, show_progress=False, write=False,
                      label=cell.model.label, command=settings.command)
    record["suite"] = cell_identity(plan)
    record = seal(record)                    # the integrity hash covers the cell identity too
    path = cell_record_path(settings.results_dir, cell)
    atomic_write_json(path, record)
    record["_path"] = str(path)
    return record


def load_cell_record(plan: CellPlan, results_dir: str | Path) -> dict[str, Any] | None:
    """The cell's record if it exists, parses, has scores, and matches the cell's identity; else None."""
    import json
    import math

    from asc_bench.evaluation.records import SCHEMA, verify_record

    path = cell_record_path(results_dir, plan.cell)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("schema") != SCHEMA or verify_record(record) is not None:
        return None
    scores = record.get("scores")
    if not isinstance(scores, list) or not scores or not all(isinstance(s, (int, float)) and math.isfinite(s)
                                                             for s in scores):
        return None
    if record.get("suite") != cell_identity(plan):
        return None
    record["_path"] = str(path)
    return record


# ------------------------------------------------------------------------------------------ checks
def plan_cells(suite: Suite, settings: BenchSettings) -> list[CellPlan]:
    """Check every cell (see the module docstring, step 1); problems are stored, not raised."""
    from asc_bench.data.listing import fingerprints, list_clips
    from asc_bench.embedding.cache import default_cache_dir
    from asc_bench.embedding.checkpoints import sha256_file
    from asc_bench.embedding.hear import PREFIX as HEAR_PREFIX
    from asc_bench.plugins import get_manager
    from asc_bench.runner import check_device
    from asc_bench.tasks import resolve_task

    manager = get_manager(settings.plugins)
    cache_dir = Path(settings.cache_dir) if settings.cache_dir else default_cache_dir()
    listings: dict[str, Any] = {}
    protocol_checked: dict[str, str] = {}
    sha_of: dict[str, str] = {}
    plans = []
    for cell in suite.cells():
        plan = CellPlan(cell)
        plans.append(plan)
        try:
            check_device(settings.device)
            spec = resolve_task(cell.column.task, manager.task_dirs).with_params(dict(cell.column.params))
            plan.spec_hash, plan.dataset = spec.spec_hash, spec.dataset
            plan.seed = spec.seed if settings.seed is None else settings.seed
            protocol = manager.get("protocols", spec.protocol)
            _check_weights(manager, cell.model, plan, sha_of, HEAR_PREFIX, sha256_file)
            lkey = f"{spec.dataset}|{sorted(spec.dataset_options.items())}|{settings.data_roots.get(spec.dataset)}"
            if lkey not in listings:
                try:
                    clips = list_clips(manager, spec.dataset, spec.dataset_options,
                                       settings.data_roots.get(spec.dataset), cache_dir)
                    listings[lkey] = (clips, fingerprints(clips)[0])
                except AscBenchError as exc:
                    listings[lkey] = exc
            if isinstance(listings[lkey], Exception):
                raise listings[lkey]
            clips, plan.listing_fingerprint = listings[lkey]
            pkey = f"{lkey}|{spec.spec_hash}|{plan.seed}"
            if pkey not in protocol_checked:
                protocol_checked[pkey] = dry_run_protocol(protocol, spec, clips, plan.seed)
            if protocol_checked[pkey]:
                raise UsageError(protocol_checked[pkey])
        except AscBenchError as exc:
            plan.problem = str(exc)
    return plans


def _check_weights(manager: Any, model: SuiteModel, plan: CellPlan, sha_of: dict[str, str], hear_prefix: str,
                   sha256_file: Callable[[Path], str]) -> None:
    from asc_bench.api import CheckpointError

    if not model.encoder.startswith(hear_prefix):
        entry = manager.get("encoders", model.encoder)
        if entry.requires_weights and model.checkpoint is None and not model.random_init:
            raise CheckpointError(f"encoder '{model.encoder}' needs weights: give the model a checkpoint path "
                                  f"or 'random' (see `asc-bench list weights`)")
    path = model.checkpoint_path()
    if path is None:
        return
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (see `asc-bench list weights` for where to get "
                              f"it, or which recipe trains it)")
    key = str(path.resolve())
    if key not in sha_of:
        sha_of[key] = sha256_file(path)
    plan.checkpoint, plan.checkpoint_sha256 = str(path), sha_of[key]


def dry_run_protocol(protocol: Any, spec: Any, clips: Sequence[Any], seed: int) -> str:
    """'' if the protocol accepts the listing, else why not. The protocol's own pre-check
    (`ProtocolEntry.check`, the one `asc-bench run` calls before embedding) decides where it has one;
    otherwise the protocol runs on 2-d random embeddings with its counts cut to 2."""
    if protocol.check is not None:
        try:
            protocol.check(ListingInfo.from_clips(clips),
                           {**spec.params, "_spec_hash": spec.spec_hash, "_fingerprint": "dry-run"}, seed)
        except Exception as exc:   # any protocol error is a problem of this cell, reported before embedding
            return (f"protocol '{spec.protocol}' rejects task '{spec.name}' on this data "
                    f"({len(clips)} clips): {type(exc).__name__}: {exc}")
        return ""
    classes = sorted({c.label for c in clips})
    index = {label: i for i, label in enumerate(classes)}
    rng = np.random.default_rng(0)
    data = EvalData(embeddings=rng.standard_normal((len(clips), 2)).astype(np.float32),
                    labels=np.array([index[c.label] for c in clips], dtype=np.int64), classes=classes,
                    splits=[c.split for c in clips], extras=[dict(c.extra) for c in clips],
                    groups=clip_groups(clips))
    params = {**spec.params, "_spec_hash": spec.spec_hash, "_fingerprint": "dry-run"}
    for key, cut in DRY_RUN_CUTS.items():
        if isinstance(params.get(key), int) and params[key] > cut:
            params[key] = cut
    if spec.protocol in SOLVER_PROTOCOLS:     # built-ins that know max_iter (others may reject the param)
        params.setdefault("max_iter", DRY_RUN_CUTS["max_iter"])
    if isinstance(params.get("Cs"), list) and params["Cs"]:
        params["Cs"] = params["Cs"][:1]
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            protocol.run(data, params, seed)
    except Exception as exc:   # any protocol error is a problem of this cell, reported before embedding
        return (f"protocol '{spec.protocol}' rejects task '{spec.name}' on this data "
                f"({len(clips)} clips, {len(classes)} classes): {type(exc).__name__}: {exc}")
    return ""


# ------------------------------------------------------------------------------------------ running
def execute_cell(plan: CellPlan, settings: BenchSettings, log_path: str | None = None) -> CellOutcome:
    """Run one cell and never raise: a failure becomes a `failed` outcome with the reason (and the
    traceback in `log_path` when given). Used in-process and, pickled, by the local and submitit launchers."""
    sink = open(log_path, "a", encoding="utf-8") if log_path else None
    try:
        with (contextlib.redirect_stdout(sink) if sink else contextlib.nullcontext()), \
             (contextlib.redirect_stderr(sink) if sink else contextlib.nullcontext()):
            record = run_cell(plan, settings)
        s = record["summary"]
        return CellOutcome(plan.cell.id, "done", record_path=record["_path"], mean=s["mean"],
                           half_width=s["half_width"])
    except Exception as exc:
        if sink:
            traceback.print_exc(file=sink)
        return CellOutcome(plan.cell.id, "failed", message=f"{type(exc).__name__}: {exc}")
    finally:
        if sink:
            sink.close()


def run_suite(suite: Suite, settings: BenchSettings, *, launcher: Any = None,
              on_outcome: Callable[[CellOutcome], None] | None = None,
              on_start: Callable[[str], None] | None = None) -> BenchReport:
    """Check all cells, skip the valid ones, run the rest (in-process, or through `launcher`)."""
    if not suite.models:
        raise UsageError(f"suite '{suite.name}' has no models: give --model LABEL=ENCODER:CHECKPOINT")
    plans = plan_cells(suite, settings)
    bad = [p for p in plans if p.problem]
    if bad and not settings.keep_going:
        lines = "\n".join(f"  {p.cell.id}: {p.problem}" for p in bad)
        raise UsageError(f"suite '{suite.name}': {len(bad)} of {len(plans)} cells failed the checks (nothing was "
                         f"embedded):\n{lines}\nFix them, or pass --keep-going to run the other cells.")
    outcomes: dict[str, CellOutcome] = {}

    def emit(outcome: CellOutcome) -> None:
        outcomes[outcome.cell_id] = outcome
        if on_outcome:
            on_outcome(outcome)

    todo = []
    for p in plans:
        if p.problem:
            emit(CellOutcome(p.cell.id, "failed", message=f"check: {p.problem}"))
            continue
        found = None if settings.force else load_cell_record(p, settings.results_dir)
        if found is not None:
            s = found["summary"]
            emit(CellOutcome(p.cell.id, "skipped", "valid record exists", found["_path"], s["mean"], s["half_width"]))
        else:
            todo.append(p)
    if launcher is None:
        for p in todo:
            if on_start:
                on_start(p.cell.id)
            emit(execute_cell(p, settings))
    else:
        launcher.run(todo, settings, emit)
    return BenchReport(suite.name, [outcomes[p.cell.id] for p in plans])

