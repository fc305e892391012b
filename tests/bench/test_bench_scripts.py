"""The bench scripts stay in step with the code they measure (no test runs them whole: they take minutes).

A rename inside mg-tune once left bench/search_overhead.py's stand-in trial with the old
argument name, and every mg-tune trial of the benchmark failed; these checks catch that
kind of drift in seconds.
"""

import importlib
import inspect
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))


@pytest.mark.parametrize("script", sorted(p.stem for p in BENCH.glob("*.py")))
def test_every_bench_script_imports(script):
    """Module-level code only (every script runs under ``if __name__ == "__main__"``): its imports of mg_tune resolve."""
    module = importlib.import_module(script)
    assert callable(getattr(module, "main", None)) or script == "stats"


def test_the_overhead_bench_patches_what_the_runner_has():
    """The stand-in trial takes run_trial's arguments, and every name it wraps in the worker's runner exists."""
    import search_overhead

    from mg_tune.search import runner
    from mg_tune.tracking import TrialLogger

    stand_in = search_overhead.make_mg_trial("unused", 1.0)
    assert list(inspect.signature(stand_in).parameters) == list(inspect.signature(runner.run_trial).parameters)
    for name in ("MlflowClient", "find_trial_run", "_resume_point", "train"):
        assert hasattr(runner, name), name
    for name in ("set_tags", "log_epoch", "finish"):
        assert callable(getattr(TrialLogger, name)), name
