"""Built-in evaluation protocols: fewshot-prototype, fewshot-logistic, linear-probe, knn.

Every protocol receives the task's params merged by the core with two private keys,
`_spec_hash` (the task spec hash) and `_fingerprint` (the dataset fingerprint). They only feed the
random streams (asc_bench.evaluation.episodes.make_rng), so the same task, dataset and seed give the same
episodes/folds for every encoder; keys starting with "_" are never echoed into
ProtocolResult.params.

Each protocol registers its parameter table (asc_bench.api.ProtocolParam: name, default, meaning);
`asc-bench list protocols` prints it, the core rejects unknown params before embedding, and
docs/protocols.md documents the same tables (tests/test_probes.py checks they agree).
"""

from __future__ import annotations

from asc_bench import hookimpl
from asc_bench.api import lazy
from asc_bench_plugins.protocols import params as tables

# The protocol modules (numpy, scikit-learn) are imported when a protocol runs, not when plugins load.
P = "asc_bench_plugins.protocols"


@hookimpl
def register_protocols(register):
    register("fewshot-prototype", lazy(f"{P}.prototype:run"), episodes=lazy(f"{P}.prototype:episodes"),
             check=lazy(f"{P}.prototype:check"), params=tables.PROTOTYPE,
             description="N-way K-shot episodes, nearest-centroid (squared Euclidean), "
                         "per-episode accuracy")
    register("fewshot-logistic", lazy(f"{P}.logistic:run"), episodes=lazy(f"{P}.logistic:episodes"),
             check=lazy(f"{P}.logistic:check"), params=tables.LOGISTIC,
             description="K clips per class, L2-normalised logistic regression (C chosen on the "
                         "support), rest as queries, repeated over draws")
    register("linear-probe", lazy(f"{P}.linear_probe:run"), episodes=lazy(f"{P}.folds:fold_units"),
             check=lazy(f"{P}.linear_probe:check"), params=tables.LINEAR_PROBE,
             description="standardised logistic regression per official fold, C by (grouped) "
                         "inner CV")
    register("knn", lazy(f"{P}.knn:run"), episodes=lazy(f"{P}.folds:fold_units"),
             check=lazy(f"{P}.knn:check"), params=tables.KNN,
             description="weighted k-NN on cosine similarity per official fold")
