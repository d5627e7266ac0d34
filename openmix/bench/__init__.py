"""Benchmark suites, the runner, the results database, the leaderboard and the gallery."""
from .db import ResultsDB, RunRecord
from .suite import RunSpec, Suite, load_suite, shard_runs

__all__ = ["ResultsDB", "RunRecord", "RunSpec", "Suite", "load_suite", "shard_runs"]
