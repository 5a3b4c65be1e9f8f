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
from asc_bench.api import ProtocolParam
from asc_bench_plugins.protocols import knn, linear_probe, logistic, prototype

PROTOTYPE_PARAMS = (
    ProtocolParam("n_way", None, "classes per episode (an integer >= 2, or 'all')", required=True),
    ProtocolParam("k_shot", None, "support clips per class", required=True),
    ProtocolParam("n_query", None,
                  "query clips per class (an integer, or 'rest': every other eligible clip)",
                  required=True),
    ProtocolParam("episodes", None, "number of episodes; one score per episode", required=True),
    ProtocolParam("class_pool", None, "class names to draw from (default: all classes)"),
    ProtocolParam("support_split", None, "split name(s) support clips may come from (default: any)"),
    ProtocolParam("query_split", None, "split name(s) query clips may come from (default: any)"),
    ProtocolParam("exclude_small_classes", False,
                  "leave out classes with too few clips (listed in the notes) instead of failing"),
    ProtocolParam("group_disjoint", "true where the dataset has groups",
                  "no query shares a group (recording/source) with a support clip of its episode; "
                  "false opts out"),
)


@hookimpl
def register_protocols(register):
    register("fewshot-prototype", prototype.run,
             description="N-way K-shot episodes, nearest-centroid (squared Euclidean), "
                         "per-episode accuracy", params=PROTOTYPE_PARAMS)
    register("fewshot-logistic", logistic.run,
             description="K clips per class, L2-normalised logistic regression (C chosen on the "
                         "support), rest as queries, repeated over draws", params=logistic.PARAMS)
    register("linear-probe", linear_probe.run,
             description="standardised logistic regression per official fold, C by (grouped) "
                         "inner CV", params=linear_probe.PARAMS)
    register("knn", knn.run,
             description="weighted k-NN on cosine similarity per official fold", params=knn.PARAMS)
