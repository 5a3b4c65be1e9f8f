"""Built-in evaluation protocols: fewshot-prototype, fewshot-logistic, linear-probe, knn.

Every protocol receives the task's params merged by the core with two private keys,
`_spec_hash` (the task spec hash) and `_fingerprint` (the dataset fingerprint). They only feed the
random streams (asc_bench.evaluation.episodes.make_rng), so the same task, dataset and seed give the same
episodes/folds for every encoder; keys starting with "_" are never echoed into
ProtocolResult.params.
"""
from __future__ import annotations

from asc_bench import hookimpl
from asc_bench_plugins.protocols import knn, linear_probe, logistic, prototype
from asc_bench_plugins.protocols.folds import fold_units


@hookimpl
def register_protocols(register):
    register("fewshot-prototype", prototype.run, episodes=prototype.episodes, check=prototype.check,
             description="N-way K-shot episodes, nearest-centroid (squared Euclidean), "
                         "per-episode accuracy")
    register("fewshot-logistic", logistic.run, episodes=logistic.episodes, check=logistic.check,
             description="K clips per class, L2-normalised logistic regression, rest as queries, "
                         "repeated over draws")
    register("linear-probe", linear_probe.run, episodes=fold_units, check=linear_probe.check,
             description="standardised logistic regression per official fold, C by inner CV")
    register("knn", knn.run, episodes=fold_units, check=knn.check,
             description="weighted k-NN on cosine similarity per official fold")
