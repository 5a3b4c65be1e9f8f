"""The built-in protocols' parameter tables: name, default, meaning (docs/protocols.md shows the same).

A module of its own, importing nothing heavy, so that registering the protocols (every `asc-bench`
command loads the plugins) and `asc-bench list protocols` need neither numpy nor scikit-learn; the
protocol modules import their table from here, so code and listing cannot disagree.
"""
from __future__ import annotations

from asc_bench.api import ProtocolParam

PROTOTYPE = (
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

LOGISTIC_CS = (0.1, 1.0, 10.0, 100.0, 1000.0)
LOGISTIC = (
    ProtocolParam("k_shot", None, "training (support) clips per class in every draw", required=True),
    ProtocolParam("draws", 10, "number of independent support draws; one score per draw"),
    ProtocolParam("C", "auto",
                  "inverse L2 strength: 'auto' chooses it per draw from Cs by cross-validation on "
                  "the support only (K = 1: middle of Cs); a number fixes it"),
    ProtocolParam("Cs", list(LOGISTIC_CS), "grid searched by C: auto"),
    ProtocolParam("inner_folds", 5,
                  "C: auto uses min(k_shot, inner_folds) folds over the support, grouped where the "
                  "dataset has groups"),
    ProtocolParam("query", "rest", "the test clips of a draw: every non-support clip ('rest' only)"),
    ProtocolParam("class_pool", None, "class names to use (default: all classes)"),
    ProtocolParam("exclude_small_classes", False,
                  "leave out classes with too few clips (listed in the notes) instead of failing"),
    ProtocolParam("group_disjoint", "true where the dataset has groups",
                  "no query shares a group (recording/source) with a support clip of its draw; "
                  "false opts out"),
    ProtocolParam("max_iter", 1000, "L-BFGS iterations per fit"),
)

LINEAR_PROBE_CS = (0.01, 0.1, 1.0, 10.0, 100.0)
LINEAR_PROBE = (
    ProtocolParam("folds", "official",
                  "'official': every split value is one test fold, trained on the others; or "
                  "{train: [...], test: [...]} for one fixed fold"),
    ProtocolParam("Cs", list(LINEAR_PROBE_CS),
                  "grid of inverse L2 strengths C searched by the inner CV (ties: smallest C)"),
    ProtocolParam("inner_folds", 3,
                  "inner CV folds on each fold's training clips (grouped where the dataset has "
                  "groups); capped by the smallest class (and the number of groups)"),
    ProtocolParam("max_iter", 1000, "L-BFGS iterations per fit"),
)

KNN = (
    ProtocolParam("k", 10, "neighbours per test clip (capped by the training clips)"),
    ProtocolParam("weighting", "exp",
                  "vote weight: 'exp' = exp(sim / temperature), 'similarity' = sim, 'uniform' = 1"),
    ProtocolParam("temperature", 0.07, "T of the 'exp' weighting (> 0)"),
    ProtocolParam("folds", "official", "as linear-probe: 'official' or {train: [...], test: [...]}"),
)
