"""benchmarks/bench_seeds.py: accuracy at equal wall time and the interleaved overhead, on a
small graph."""
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_seeds  # noqa: E402
from test_benchmarks_training import _graph  # noqa: E402


def test_accuracy_at_equal_time_takes_the_best_validation_point_so_far():
    curve = [{"time": 1.0, "val": 0.5, "test": 0.4}, {"time": 2.0, "val": 0.7, "test": 0.6},
             {"time": 3.0, "val": 0.6, "test": 0.9}, {"time": 4.0, "val": 0.8, "test": 0.7}]
    assert math.isnan(bench_seeds.accuracy_at(curve, 0.5))
    assert bench_seeds.accuracy_at(curve, 1.5) == 0.4
    assert bench_seeds.accuracy_at(curve, 3.5) == 0.6  # not the later, worse-validated 0.9
    assert bench_seeds.accuracy_at(curve, 4.0) == bench_seeds.final_accuracy(curve) == 0.7


def test_runs_overhead_and_table_on_a_small_graph():
    g = _graph()
    args = bench_seeds.parse_args(["--epochs", "1", "--evals-per-epoch", "2", "--batch-size",
                                   "16", "--overhead-steps", "4", "--hidden", "16"])
    runs = [bench_seeds.run(g, 3, "tiny", name, 1e-2, 0, args)
            for name in ("mvs", "onehop", "mvs-small")]
    mvs, onehop, small = runs
    assert mvs["steps"] == onehop["steps"] == math.ceil(100 / 16)
    assert small["batch_size"] == round(16 * 0.7) and "seeds" not in onehop
    assert mvs["seeds"]["report"].startswith("seeds: ") and 0 <= mvs["seeds"]["mvs_share"] <= 1
    times = [p["time"] for p in mvs["curve"]]
    assert times == sorted(times) and times[-1] == pytest.approx(mvs["train_time_s"])
    cost = bench_seeds.overhead(g, 3, "tiny", args)
    assert cost["steps"] == 4 and set(cost["mean_ms"]) == {"mvs", "onehop"}
    table = bench_seeds.summary(runs, [cost])
    assert "tiny" in table and "vs uniform" in table and "Interleaved per-step cost" in table
