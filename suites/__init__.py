"""Benchmark suites shipped with asc-bench (YAML files; see asc_bench.evaluation.suites)."""
