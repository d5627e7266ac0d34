"""Benchmark suites, the runner, the results database, the leaderboard and the gallery."""
from .db import ResultsDB, ResultsDBError, RunRecord
from .suite import RunSpec, Suite, SuiteConfig, SuiteConfigError, load_suite, parse_suite, shard_runs

__all__ = ["ResultsDB", "ResultsDBError", "RunRecord", "RunSpec", "Suite", "SuiteConfig",
           "SuiteConfigError", "load_suite", "parse_suite", "shard_runs"]
