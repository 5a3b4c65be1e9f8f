"""Deterministic, vectorised N-way K-shot episode sampling.

Episodes depend only on (labels, splits, class names, sampling params, seed, spec_hash, dataset
fingerprint), never on embeddings, so every encoder evaluated on a task with a seed sees the same
episodes on any machine and thread count (numpy's PCG64 stream and integer sorting are platform
independent; no threads or BLAS are involved).

Randomness. ``make_rng(seed, spec_hash, fingerprint, purpose)`` builds
``Generator(PCG64(SeedSequence([seed, *words])))`` where ``words`` are the eight 32-bit words of
sha256("asc-bench/rng/2\\0" + spec_hash + "\\0" + fingerprint + "\\0" + purpose). Bounded draws
are int32 (``Generator.integers(..., dtype=int32)``, or floor(u * bound) from doubles where the
bound differs per row: see ``_partial_shuffle``). Version 2 of the tag (group-disjoint sampling,
these draws) changed every episode of version 1; any future change of the draws bumps it again. The sampler's
purpose string also holds the canonical JSON of the sampling params, so a k_shot sweep under one
spec_hash still gets its own stream.

Algorithm (per block of episodes; the block size is a fixed function of N and the class size, so
results do not depend on the machine):
1. Classes: every eligible class gets a unique random 64-bit key per episode (random high bits,
   class position in the low bits); the N smallest keys are the episode's classes, in key order
   (``n_way: all`` = a random permutation of all eligible classes).
2. Clips: each class's clips are laid out as [support-only | both | query-only] (row order inside
   each group); every slot gets a unique random key. Support = the K smallest keys among the
   support-eligible slots. Without split constraints the queries are the next Q keys (the order
   of i.i.d. keys is a uniform random permutation, so support and queries are a uniform random
   disjoint draw). With split constraints a second, independent key draw orders the remaining
   query-eligible slots (reusing the first draw would bias queries towards query-only clips).
3. ``n_query: rest`` takes every remaining query-eligible clip: classes then have different
   numbers of queries, so the query array is padded to the largest possible count with index -1
   and ``query_mask`` marks the real entries.

Group-disjoint episodes (``group_disjoint``, default: on whenever a clip has a group). Clips of one
recording/source (``Clip.group``) are not independent, so no query of an episode may share a group
with any support clip of that episode, of any way (a Speech Commands speaker says many words: the
group spans classes). Clips without a group are groups of their own. Per episode:
(a) classes as in 1; (b) support = K clips drawn uniformly from each way's support-eligible clips;
(c) every clip whose group holds a support clip of the episode leaves the query pool; (d) if some
way keeps fewer than Q eligible queries (1 for ``rest``), the episode's whole support is drawn
again (b), so the support is uniform among the support draws that leave every way Q queries (on
real data nearly all draws do: the unconstrained support distribution); (e) queries = Q clips
drawn uniformly (an independent partial shuffle) from each way's remaining eligible clips, or all
of them, in row order, for ``rest``. A class qualifies when, on its own, some choice of its groups
holds K support clips and leaves Q group-disjoint queries (exact, from the listing:
``check_episode_classes``); classes that do not are an error or, with exclude_small_classes, left
out (named in the notes). An episode still without a valid support after MAX_SUPPORT_ROUNDS draws
(groups shared across its classes) is an error naming its classes.

Layout of the result: ``support_idx[E, N, K]`` clip rows, ``query_idx[E, N*Q]`` clip rows grouped
by way (way n owns columns n*Q .. n*Q+Q-1), ``query_mask[E, N*Q]``, ``classes[E, N]`` class
indices; ``query_way[N*Q]`` is the true way position of every query column; ``group_disjoint``
is the policy the episodes were drawn under.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

import numpy as np

from asc_bench.api import AscBenchError, UsageError

_RNG_TAG = "asc-bench/rng/2"
_HASH_TAG = b"asc-bench/episodes/1"
_BLOCK_ELEMENTS = 1 << 22      # keys drawn per block: bounds memory at 32 MiB per key matrix
MAX_SUPPORT_ROUNDS = 1000      # group-disjoint: support redraws before an episode is given up

SAMPLING_KEYS = ("n_way", "k_shot", "n_query", "episodes", "class_pool", "support_split",
                 "query_split", "exclude_small_classes", "group_disjoint")


def seed_words(seed: int, spec_hash: str = "", fingerprint: str = "", purpose: str = "") -> list[int]:
    """Seed entropy: [seed, 8 words of sha256(tag, spec_hash, fingerprint, purpose)]."""
    if int(seed) < 0:
        raise UsageError(f"seed must be >= 0, got {seed}")
    text = "\0".join([_RNG_TAG, str(spec_hash), str(fingerprint), str(purpose)])
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return [int(seed)] + [int.from_bytes(digest[i:i + 4], "little") for i in range(0, 32, 4)]


def make_rng(seed: int, spec_hash: str = "", fingerprint: str = "",
             purpose: str = "") -> np.random.Generator:
    """A PCG64 generator whose stream depends only on the four arguments."""
    ss = np.random.SeedSequence(seed_words(seed, spec_hash, fingerprint, purpose))
    return np.random.Generator(np.random.PCG64(ss))


# ------------------------------------------------------------------------------------------ params
def _names(value: Any, key: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise UsageError(f"protocol param {key} must be a non-empty list of names, got {value!r}")
    return tuple(sorted({str(v) for v in value}))


def _positive_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise UsageError(f"protocol param {key} must be a positive integer, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class EpisodeParams:
    """Validated sampling params (see the task schema): n_way int|"all", n_query int|"rest"."""

    n_way: int | str
    k_shot: int
    n_query: int | str
    episodes: int
    class_pool: tuple[str, ...] | None = None
    support_split: tuple[str, ...] | None = None
    query_split: tuple[str, ...] | None = None
    exclude_small_classes: bool = False
    group_disjoint: bool | None = None      # None: on when the dataset defines groups

    @classmethod
    def from_params(cls, params: Mapping[str, Any], *, defaults: Mapping[str, Any] | None = None
                    ) -> "EpisodeParams":
        merged = {**(defaults or {}), **{k: v for k, v in params.items() if k in SAMPLING_KEYS}}
        missing = [k for k in ("n_way", "k_shot", "n_query", "episodes") if k not in merged]
        if missing:
            raise UsageError(f"episode sampling needs protocol params {missing}")
        n_way = merged["n_way"]
        if n_way != "all":
            n_way = _positive_int(n_way, "n_way")
            if n_way < 2:
                raise UsageError("n_way must be at least 2 (or 'all')")
        n_query = merged["n_query"]
        if n_query != "rest":
            n_query = _positive_int(n_query, "n_query")
        excl = merged.get("exclude_small_classes", False)
        if not isinstance(excl, bool):
            raise UsageError(f"exclude_small_classes must be true or false, got {excl!r}")
        disjoint = merged.get("group_disjoint")
        if disjoint == "auto":
            disjoint = None
        if disjoint is not None and not isinstance(disjoint, bool):
            raise UsageError(f"group_disjoint must be true, false or auto, got {disjoint!r}")
        return cls(n_way, _positive_int(merged["k_shot"], "k_shot"), n_query,
                   _positive_int(merged["episodes"], "episodes"),
                   _names(merged.get("class_pool"), "class_pool"),
                   _names(merged.get("support_split"), "support_split"),
                   _names(merged.get("query_split"), "query_split"), excl, disjoint)

    def canonical(self) -> dict[str, Any]:
        return {"n_way": self.n_way, "k_shot": self.k_shot, "n_query": self.n_query,
                "episodes": self.episodes,
                "class_pool": list(self.class_pool) if self.class_pool else None,
                "support_split": list(self.support_split) if self.support_split else None,
                "query_split": list(self.query_split) if self.query_split else None,
                "exclude_small_classes": self.exclude_small_classes,
                "group_disjoint": self.group_disjoint}


# ---------------------------------------------------------------------------------------- episodes
@dataclass
class Episodes:
    support_idx: np.ndarray        # [E, N, K] int64 clip rows
    query_idx: np.ndarray          # [E, N*Q] int64 clip rows, -1 where padded
    query_mask: np.ndarray         # [E, N*Q] bool
    classes: np.ndarray            # [E, N] int64 class indices
    n_query: int                   # Q (the padded width per way when n_query is "rest")
    excluded_classes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    group_disjoint: bool = False   # no query shares a group with a support clip of its episode

    @property
    def n_episodes(self) -> int:
        return int(self.support_idx.shape[0])

    @property
    def n_way(self) -> int:
        return int(self.support_idx.shape[1])

    @property
    def k_shot(self) -> int:
        return int(self.support_idx.shape[2])

    @property
    def query_way(self) -> np.ndarray:
        """[N*Q] true way position of every query column."""
        return np.repeat(np.arange(self.n_way, dtype=np.int64), self.n_query)

    @property
    def hash(self) -> str:
        return episode_hash(self.support_idx, self.query_idx, self.query_mask, self.classes)


def episode_hash(*arrays: np.ndarray) -> str:
    """sha256 hex over the arrays' shapes and little-endian int64/bool bytes, in the given order."""
    h = hashlib.sha256(_HASH_TAG)
    for arr in arrays:
        a = np.asarray(arr)
        a = a.astype(np.bool_ if a.dtype == np.bool_ else "<i8", copy=False)
        h.update(json.dumps([str(a.dtype), list(a.shape)]).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


@dataclass
class _Table:
    """Eligible classes and their clips laid out as [support-only | both | query-only]."""

    class_ids: np.ndarray          # [C] class index
    rows: np.ndarray               # [C, M] clip rows, -1 padded
    n_a: np.ndarray                # [C] support-only count
    n_ab: np.ndarray               # [C] support-eligible count (a + b)
    n_tot: np.ndarray              # [C] all usable clips (a + b + c)
    gid: np.ndarray | None = None  # [C, M] group id of each slot, n_groups where padded
    n_groups: int = 0
    # runs of one group in a layout row (slots sorted by group): key = row * (n_groups + 1) + group
    run_keys: np.ndarray | None = None
    run_start: np.ndarray | None = None
    run_len: np.ndarray | None = None


def group_ids(groups: Sequence[str | None] | None, n_clips: int) -> np.ndarray | None:
    """Dense int64 group id per clip (clips without a group get one of their own); None when no
    clip has a group. Ids follow the sorted group names, so they depend only on the listing."""
    if groups is None:
        return None
    groups = list(groups)
    if len(groups) != n_clips:
        raise AscBenchError(f"{n_clips} labels but {len(groups)} group entries")
    named = sorted({str(g) for g in groups if g is not None})
    if not named:
        return None
    index = {g: i for i, g in enumerate(named)}
    out = np.empty(n_clips, dtype=np.int64)
    single = len(named)
    for i, g in enumerate(groups):
        if g is None:
            out[i] = single
            single += 1
        else:
            out[i] = index[str(g)]
    return out


def _best_case_queries(labels: np.ndarray, gid: np.ndarray, sup_ok: np.ndarray,
                       qry_ok: np.ndarray, pool: list[int], k: int, n_classes: int) -> np.ndarray:
    """[n_classes] the most group-disjoint queries a class can keep beside its own K support clips.

    Exact for the class alone: choose whole groups holding >= K support-eligible clips so that the
    query-eligible clips they hold are fewest (a knapsack over the class's groups, solved by a
    dynamic programme over 0..K support clips, all classes at once); the rest is the answer.
    """
    member = np.isin(labels, pool)
    n_g = int(gid.max()) + 1
    key, inv = np.unique(labels[member] * n_g + gid[member], return_inverse=True)
    s_g = np.bincount(inv, weights=sup_ok[member], minlength=key.size).astype(np.int64)
    q_g = np.bincount(inv, weights=qry_ok[member], minlength=key.size).astype(np.int64)
    cls = key // n_g
    # An optimal choice uses at most K groups, so per class and per min(s, K) only the K groups
    # losing the fewest queries can matter: the programme runs over at most K^2 groups a class.
    cap = np.minimum(s_g, k)
    cand = np.flatnonzero(s_g > 0)
    cand = cand[np.lexsort((q_g[cand], cap[cand], cls[cand]))]
    kind = cls[cand] * (k + 1) + cap[cand]
    cand = cand[np.arange(cand.size) - np.searchsorted(kind, kind) < k]
    c_of = cls[cand]
    rank = np.arange(cand.size) - np.searchsorted(c_of, c_of)
    big = np.iinfo(np.int64).max // 4
    best = np.full((n_classes, k + 1), big, dtype=np.int64)   # fewest queries lost for >= j shots
    best[:, 0] = 0
    steps = np.arange(k + 1)
    for r in range(int(rank.max()) + 1 if rank.size else 0):  # one group per class at a time
        at = cand[rank == r]
        c = cls[at]
        src = np.take_along_axis(best[c], np.maximum(steps[None, :] - cap[at, None], 0), 1)
        best[c] = np.minimum(best[c], src + q_g[at, None])
    left = np.bincount(cls, weights=q_g, minlength=n_classes).astype(np.int64) - best[:, k]
    return np.maximum(left, 0) * np.isin(np.arange(n_classes), pool)


def _build_table(labels: np.ndarray, splits: Sequence[str | None], classes: Sequence[str],
                 p: EpisodeParams, notes: list[str], gid: np.ndarray | None = None
                 ) -> tuple[_Table, list[str]]:
    n_classes = len(classes)
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise AscBenchError("labels must index into the class list")
    split_arr = np.array(["" if s is None else str(s) for s in splits], dtype=object)
    if split_arr.size != labels.size:
        raise AscBenchError(f"{labels.size} labels but {split_arr.size} split entries")
    sup_ok = (np.isin(split_arr, list(p.support_split)) if p.support_split
              else np.ones(labels.size, bool))
    qry_ok = (np.isin(split_arr, list(p.query_split)) if p.query_split
              else np.ones(labels.size, bool))
    for key, wanted in (("support_split", p.support_split), ("query_split", p.query_split)):
        unknown = sorted(set(wanted or ()) - set(split_arr.tolist()))
        if unknown:
            raise UsageError(f"{key} names split(s) {unknown} that no clip has; splits present: "
                             f"{sorted(set(split_arr.tolist()) - {''})}")
    if p.class_pool is not None:
        unknown = sorted(set(p.class_pool) - set(classes))
        if unknown:
            raise UsageError(f"class_pool names unknown classes {unknown}")
        pool = sorted(classes.index(c) for c in p.class_pool)
    else:
        pool = list(range(n_classes))

    # group id per clip: 0 support-only, 1 both, 2 query-only, 3 unusable; lexsort keeps row order
    group = np.where(sup_ok & qry_ok, 1, np.where(sup_ok, 0, np.where(qry_ok, 2, 3)))
    # with groups, each [region] is sorted by group, so a group's clips are one run of slots
    by_group = gid if gid is not None else np.zeros(labels.size, dtype=np.int64)
    order = np.lexsort((np.arange(labels.size), by_group, group, labels))
    counts = np.stack([np.bincount(labels[group == g], minlength=n_classes) for g in range(3)], 1)
    q_need = 1 if p.n_query == "rest" else int(p.n_query)
    k = p.k_shot
    a, b, c = counts[:, 0], counts[:, 1], counts[:, 2]
    if gid is None:
        # the support may use up to min(K, b) "both" clips; the queries must survive the worst case
        ok = (a + b >= k) & (c + b - np.minimum(k, b) >= q_need)
    else:
        left = _best_case_queries(labels, gid, sup_ok, qry_ok,
                                  [i for i in pool if a[i] + b[i] >= k], k, n_classes)
        ok = (a + b >= k) & (left >= q_need)
    small = [classes[i] for i in pool if not ok[i]]
    if small:
        what = (f"{k} support + {'at least 1' if p.n_query == 'rest' else q_need} query clip(s)"
                + (" within the support/query splits" if p.support_split or p.query_split else "")
                + (" with the queries from groups (recordings/sources) that none of the support "
                   "clips belongs to" if gid is not None else ""))
        if not p.exclude_small_classes:
            def size(i: int) -> str:
                n = int(a[i] + b[i] + c[i])
                if gid is None:
                    return f"{n}"
                return f"{n} clips in {np.unique(gid[labels == i]).size} groups"
            detail = ", ".join(f"{classes[i]} ({size(i)})" for i in pool if not ok[i])
            fix = (", or group_disjoint: false to allow queries from the support's recordings "
                   "(they leak)" if gid is not None else "")
            raise AscBenchError(f"{len(small)} class(es) have fewer clips than {what}: {detail}. "
                                f"Lower k_shot/n_query, or set exclude_small_classes: true to "
                                f"leave them out (recorded in the result notes){fix}.")
        notes.append(f"excluded {len(small)} class(es) with fewer clips than {what}: "
                     + ", ".join(small))
    keep = np.array([i for i in pool if ok[i]], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(np.bincount(labels, minlength=n_classes))])
    n_tot = (a + b + c)[keep]
    width = int(n_tot.max()) if keep.size else 0
    rows = np.full((keep.size, width), -1, dtype=np.int64)
    for j, ci in enumerate(keep):
        members = order[starts[ci]:starts[ci + 1]]
        members = members[group[members] < 3]
        rows[j, :members.size] = members
    table = _Table(keep, rows, a[keep], (a + b)[keep], n_tot)
    if gid is not None:
        table.n_groups = int(gid.max()) + 1
        table.gid = np.where(rows >= 0, gid[np.maximum(rows, 0)], table.n_groups)
        g = table.gid
        first = np.ones(g.shape, dtype=bool)
        first[:, 1:] = g[:, 1:] != g[:, :-1]
        first &= g < table.n_groups
        r, start = np.nonzero(first)                     # row-major: keys come out sorted
        stop = np.append(start[1:], 0)
        last = np.append(r[1:] != r[:-1], True)
        stop = np.where(last, n_tot[r], stop)
        table.run_keys = r * (table.n_groups + 1) + g[r, start]
        # a last entry (start = width, length 0) is what index -1 finds: "no run"
        table.run_start = np.append(start, width).astype(np.int32)
        table.run_len = np.append(stop - start, 0).astype(np.int32)
    return table, small


def _partial_shuffle(rng: np.random.Generator, n: np.ndarray, steps: int, width: int) -> np.ndarray:
    """Fisher-Yates, first `steps` steps, on R rows of [0 .. width), row r restricted to [0, n[r]).

    Step j swaps slot j with slot j + U{0 .. n - j - 1}: exact int32 integers from the generator
    when every row has the same bound, else floor(u * (n - j)) from one 53-bit double u per row
    (3x faster than per-row integer bounds; the deviation from uniform is below n * 2^-53, and
    IEEE arithmetic makes it the same on every machine). Rows with n - j <= 0 swap j with itself,
    still consuming one draw so the stream stays aligned. Returns perm[R, width] (a transposed view: slot-major storage makes slot j one
    contiguous row) of the smallest of int8/int16/int32 that holds width (a narrow table keeps
    the swaps in cache: int8 is about 1.6x faster than int32 for 40 slots; the values do not
    depend on it); perm[r, :min(steps, n[r])] is a uniform random ordered sample without
    replacement from [0, n[r]).
    """
    rows = n.size
    dtype = np.int8 if width <= 127 else np.int16 if width <= 32767 else np.int32
    perm_t = np.broadcast_to(np.arange(width, dtype=dtype)[:, None], (width, rows)).copy()
    flat = perm_t.reshape(-1)
    cols = np.arange(rows, dtype=np.int64)
    n = n.astype(np.int32)
    n0 = int(n[0]) if rows and np.all(n == n[0]) else None
    for j in range(min(steps, width)):
        # a scalar bound draws the same stream as an equal array bound, only faster
        if n0 is not None:
            r = rng.integers(0, max(n0 - j, 1), size=rows, dtype=np.int32)
        else:
            bound = np.maximum(n - j, 1)
            r = np.minimum((rng.random(rows) * bound).astype(np.int32), bound - 1)
        b = (r + j) * rows + cols
        tmp = flat[b]
        flat[b] = perm_t[j]
        perm_t[j] = tmp
    return perm_t.T


@dataclass
class _Plan:
    params: EpisodeParams          # group_disjoint resolved to True/False
    table: _Table
    excluded: list[str]
    notes: list[str]
    n_way: int


def _plan(labels: Sequence[int] | np.ndarray, splits: Sequence[str | None] | None,
          params: Mapping[str, Any] | EpisodeParams, classes: Sequence[str] | None,
          groups: Sequence[str | None] | None) -> tuple[np.ndarray, _Plan]:
    labels = np.asarray(labels, dtype=np.int64)
    if labels.ndim != 1:
        raise AscBenchError("labels must be 1-D")
    p = params if isinstance(params, EpisodeParams) else EpisodeParams.from_params(params)
    gid = group_ids(groups, labels.size)
    if p.group_disjoint and gid is None:
        raise UsageError("group_disjoint: true, but the dataset defines no groups (no clip has a "
                         "Clip.group); drop the param, or use an adapter/option that sets groups "
                         "(docs/datasets.md)")
    disjoint = gid is not None if p.group_disjoint is None else bool(p.group_disjoint)
    p = replace(p, group_disjoint=disjoint)
    n_classes = int(labels.max()) + 1 if labels.size else 0
    class_names = list(classes) if classes is not None else [str(i) for i in range(n_classes)]
    split_list = list(splits) if splits is not None else [None] * labels.size
    notes: list[str] = []
    table, excluded = _build_table(labels, split_list, class_names, p, notes,
                                   gid if disjoint else None)
    n_cls = table.class_ids.size
    n_way = n_cls if p.n_way == "all" else int(p.n_way)
    if n_cls < max(2, n_way):
        raise AscBenchError(f"{n_way}-way episodes need {n_way} classes with enough clips; only "
                            f"{n_cls} qualify ({len(class_names)} in the dataset"
                            f"{', after exclusions' if excluded else ''}). Lower n_way.")
    return labels, _Plan(p, table, excluded, notes, n_way)


def check_episode_classes(labels: Sequence[int] | np.ndarray, splits: Sequence[str | None] | None,
                          params: Mapping[str, Any] | EpisodeParams, *,
                          classes: Sequence[str] | None = None,
                          groups: Sequence[str | None] | None = None) -> list[str]:
    """The classes `sample_episodes` would leave out, from the listing alone (no embeddings, no
    random draws): raises the same AscBenchError/UsageError it would raise (too-small classes
    without exclude_small_classes, too few classes, bad params), else returns the excluded class
    names (empty when none). Cheap: call it before embedding anything."""
    return list(_plan(labels, splits, params, classes, groups)[1].excluded)


def sample_episodes(labels: Sequence[int] | np.ndarray, splits: Sequence[str | None] | None,
                    params: Mapping[str, Any] | EpisodeParams, seed: int, *,
                    classes: Sequence[str] | None = None, spec_hash: str = "",
                    fingerprint: str = "", groups: Sequence[str | None] | None = None) -> Episodes:
    """Sample episodes (see the module docstring); raises AscBenchError listing too-small classes.

    `groups` (per clip, None entries allowed) makes the episodes group-disjoint unless the params
    say `group_disjoint: false`; `Episodes.group_disjoint` records the policy used."""
    labels, plan = _plan(labels, splits, params, classes, groups)
    p, table, n_way, notes = plan.params, plan.table, plan.n_way, plan.notes
    n_cls = table.class_ids.size
    k = p.k_shot
    constrained = p.support_split is not None or p.query_split is not None
    disjoint = bool(p.group_disjoint)
    # the largest number of queries a class can give (pads "rest")
    q_cap = table.n_tot - table.n_a - np.maximum(0, k - table.n_a)
    q = int(q_cap.max()) if p.n_query == "rest" else int(p.n_query)
    width = table.rows.shape[1]
    purpose = "episodes:" + json.dumps(p.canonical(), sort_keys=True)
    rng = make_rng(seed, spec_hash, fingerprint, purpose)

    e_total = p.episodes
    block = max(1, _BLOCK_ELEMENTS // max(1, n_way * width, n_cls,
                                          table.n_groups + 1 if disjoint else 0))
    sup_out = np.empty((e_total, n_way, k), dtype=np.int64)
    qry_out = np.empty((e_total, n_way, q), dtype=np.int64)
    msk_out = np.empty((e_total, n_way, q), dtype=bool)
    cls_out = np.empty((e_total, n_way), dtype=np.int64)
    flat_rows = table.rows.reshape(-1)
    for start in range(0, e_total, block):
        stop = min(e_total, start + block)
        e = stop - start
        chosen = _partial_shuffle(rng, np.full(e, n_cls), n_way, n_cls)[:, :n_way]
        chosen = chosen.astype(np.int64).reshape(-1)                       # [e*N] table rows
        n_tot = table.n_tot[chosen]
        offset = (chosen * width)[:, None]
        if disjoint and not constrained and p.n_query != "rest":
            sup_pos, qry_pos, n_valid = _disjoint_runs(rng, table, chosen, e, n_way, k, q)
        elif disjoint:
            sup_pos, qry_pos, n_valid = _disjoint_draw(rng, table, chosen, e, n_way, k, q,
                                                       p.n_query == "rest")
        elif not constrained:
            steps = k + q if p.n_query != "rest" else width - 1
            perm = _partial_shuffle(rng, n_tot, steps, width)
            sup_pos, qry_pos = perm[:, :k], perm[:, k:k + q]
            n_valid = n_tot - k
        else:
            perm = _partial_shuffle(rng, table.n_ab[chosen], k, width)
            sup_pos = perm[:, :k]
            slot = np.arange(width)
            eligible = ((slot >= k) & (perm >= table.n_a[chosen][:, None])
                        & (perm < n_tot[:, None]))
            # eligible slots first (stable), then shuffle only those
            compact = np.take_along_axis(perm, np.argsort(~eligible, axis=1, kind="stable"), 1)
            n_valid = eligible.sum(1)
            steps = q if p.n_query != "rest" else width - 1
            qperm = _partial_shuffle(rng, n_valid, steps, width)
            qry_pos = np.take_along_axis(compact, qperm[:, :q].astype(np.int64), 1)
        mask = np.arange(q) < n_valid[:, None]
        sup = flat_rows[offset + sup_pos]
        qry = (flat_rows[offset + qry_pos] if p.n_query != "rest" else
               np.where(mask, flat_rows[offset + np.where(mask, qry_pos, 0)], -1))
        sup_out[start:stop] = sup.reshape(e, n_way, k)
        qry_out[start:stop] = qry.reshape(e, n_way, q)
        msk_out[start:stop] = mask.reshape(e, n_way, q)
        cls_out[start:stop] = table.class_ids[chosen].reshape(e, n_way)
    if p.n_query == "rest":
        notes.append(f"n_query 'rest': up to {q} queries per class, padded and masked; episode "
                     f"accuracy is over that episode's real queries")
    if p.n_way == "all":
        notes.append(f"n_way 'all' = {n_way} classes")
    if disjoint:
        notes.append("group-disjoint episodes: no query shares a group (recording/source) with "
                     "any support clip of its episode")
    return Episodes(sup_out, qry_out.reshape(e_total, n_way * q), msk_out.reshape(e_total, -1),
                    cls_out, q, list(plan.excluded), notes, disjoint)


def _disjoint_draw(rng: np.random.Generator, table: _Table, chosen: np.ndarray, e: int,
                   n_way: int, k: int, q: int, rest: bool
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Support, then queries from groups no support clip of the episode belongs to.

    An episode whose support leaves some way fewer than Q (``rest``: 1) eligible queries draws
    its whole support again (only those episodes, in order, from the same stream), up to
    MAX_SUPPORT_ROUNDS times. Returns (sup_pos [e*N, K], qry_pos [e*N, q], n_valid [e*N]) as
    layout positions."""
    width = table.rows.shape[1]
    need = 1 if rest else q
    n_ab = table.n_ab[chosen]
    gid = table.gid[chosen]                                             # [e*N, M]
    n_a = table.n_a[chosen][:, None]
    slot = np.arange(width)
    sup_pos = np.empty((chosen.size, k), dtype=np.int64)
    eligible = np.empty((chosen.size, width), dtype=bool)
    todo = np.arange(e, dtype=np.int64)
    ways = np.arange(n_way, dtype=np.int64)
    stride = table.n_groups + 1                                         # last column: padding
    for _ in range(MAX_SUPPORT_ROUNDS):
        rows = (todo[:, None] * n_way + ways).reshape(-1)
        sp = np.ascontiguousarray(_partial_shuffle(rng, n_ab[rows], k, width)[:, :k],
                                  dtype=np.int64)
        g_rows = gid[rows]
        sup_g = np.take_along_axis(g_rows, sp, 1).reshape(todo.size, n_way * k)
        marked = np.zeros((todo.size, stride), dtype=bool)
        marked[:, -1] = True                                            # padding never qualifies
        marked[np.arange(todo.size)[:, None], sup_g] = True
        local = np.repeat(np.arange(todo.size, dtype=np.int64) * stride, n_way)
        elig = ~marked.reshape(-1)[local[:, None] + g_rows] & (slot >= n_a[rows])
        sup_pos[rows] = sp
        eligible[rows] = elig
        bad = (elig.sum(1) < need).reshape(todo.size, n_way).any(1)
        todo = todo[bad]
        if not todo.size:
            break
    else:
        raise _no_support_error(table, chosen, e, n_way, todo, need)
    n_valid = eligible.sum(1)
    # eligible positions first, in layout order (cumsum compaction: no sort)
    r, pos = np.nonzero(eligible)
    dest = np.cumsum(eligible, axis=1)[r, pos] - 1
    compact = np.zeros((chosen.size, width), dtype=np.int64)
    compact[r, dest] = pos
    if rest:
        return sup_pos, compact[:, :q], n_valid
    qperm = _partial_shuffle(rng, n_valid, q, width)[:, :q].astype(np.int64)
    return sup_pos, np.take_along_axis(compact, qperm, 1), n_valid


def _no_support_error(table: _Table, chosen: np.ndarray, e: int, n_way: int, todo: np.ndarray,
                      need: int) -> AscBenchError:
    names = sorted({int(c) for c in table.class_ids[chosen.reshape(e, n_way)[todo[0]]]})
    return AscBenchError(
        f"{todo.size} episode(s) found no group-disjoint support in {MAX_SUPPORT_ROUNDS} "
        f"draws (e.g. the one of class indices {names}): their groups (recordings/sources) "
        f"span these classes so that few support draws leave {need} query clip(s) per way. "
        f"Lower n_query/k_shot/n_way, or set group_disjoint: false (queries then may share a "
        f"recording with the support)")


def _disjoint_runs(rng: np.random.Generator, table: _Table, chosen: np.ndarray, e: int,
                   n_way: int, k: int, q: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`_disjoint_draw` for fixed Q without split constraints, without compaction.

    A way's slots are sorted by group, so the clips the support's groups take from it are at most
    N*K runs of slots. Queries are Q distinct "virtual" positions drawn uniformly from the
    n - (blocked) free slots by a partial shuffle, then mapped past the blocked runs (in order of
    their start): the same uniform draw among the eligible clips, in O(N*K) array passes."""
    width = table.rows.shape[1]
    n_tot = table.n_tot[chosen]
    stride = table.n_groups + 1
    nk = n_way * k
    flat_gid = table.gid.reshape(-1)
    dense = table.class_ids.size * stride <= _BLOCK_ELEMENTS
    if dense:                                                # (row, group) -> run index, or -1
        lookup = np.full(table.class_ids.size * stride, -1, dtype=np.int64)
        lookup[table.run_keys] = np.arange(table.run_keys.size)
    sup_pos = np.empty((chosen.size, k), dtype=np.int64)
    starts = np.empty((chosen.size, nk), dtype=np.int32)
    lens = np.empty((chosen.size, nk), dtype=np.int32)
    n_free = np.empty(chosen.size, dtype=np.int64)
    todo = np.arange(e, dtype=np.int64)
    ways = np.arange(n_way, dtype=np.int64)
    for _ in range(MAX_SUPPORT_ROUNDS):
        rows = (todo[:, None] * n_way + ways).reshape(-1)
        sp = np.ascontiguousarray(_partial_shuffle(rng, n_tot[rows], k, width)[:, :k],
                                  dtype=np.int64)
        sup_g = flat_gid[(chosen[rows] * width)[:, None] + sp].reshape(todo.size, nk)
        # sorted by group = by start of its run (a row's slots are sorted by group); a group
        # counts once per episode: repeats become the padding id, which has no run
        sup_g.sort(axis=1)
        sup_g[:, 1:][sup_g[:, 1:] == sup_g[:, :-1]] = stride - 1
        key = ((chosen[rows] * stride).reshape(todo.size, n_way, 1)
               + sup_g[:, None, :]).reshape(rows.size, nk)
        if dense:
            at = lookup[key]                                    # -1: no run
        else:
            at = np.minimum(np.searchsorted(table.run_keys, key), table.run_keys.size - 1)
            at[table.run_keys[at] != key] = -1
        ln, st = table.run_len[at], table.run_start[at]
        free = n_tot[rows] - ln.sum(1, dtype=np.int64)
        if rows.size == chosen.size:
            sup_pos, starts, lens, n_free = sp, st, ln, free
        else:
            sup_pos[rows], starts[rows], lens[rows], n_free[rows] = sp, st, ln, free
        todo = todo[(free < q).reshape(todo.size, n_way).any(1)]
        if not todo.size:
            break
    else:
        raise _no_support_error(table, chosen, e, n_way, todo, q)
    # slot-major [q, e*N] in the shuffle's narrow integer type (positions and run bounds are
    # <= width): each pass below is then a few contiguous, cache-resident vector operations
    pos = np.ascontiguousarray(_partial_shuffle(rng, n_free, q, width)[:, :q].T)
    starts_t = np.ascontiguousarray(starts.T, dtype=pos.dtype)
    lens_t = np.ascontiguousarray(lens.T, dtype=pos.dtype)
    hit = np.empty(pos.shape, dtype=bool)
    step = np.empty(pos.shape, dtype=pos.dtype)
    for i in range(nk):                          # skip the blocked runs, in order of their start
        np.greater_equal(pos, starts_t[i], out=hit)
        np.multiply(hit, lens_t[i], out=step)
        pos += step
    return sup_pos, pos.T.astype(np.int64), n_free
