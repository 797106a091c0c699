"""The examples run as a user runs them: the DGL-shaped script on Cora, the downloaded-dataset
script on a stand-in for Reddit (no download), saving and resuming."""
import runpy
import sys
from pathlib import Path

import dgl
import pytest

import dgl_mvs

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def examples_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    yield
    sys.modules.pop("node_classification", None)
    sys.modules.pop("downloaded_dataset", None)


def test_node_classification_example_learns_cora(monkeypatch, capsys, examples_on_path):
    monkeypatch.setattr(sys, "argv", ["node_classification.py", "--epochs", "6"])
    runpy.run_path(str(EXAMPLES / "node_classification.py"), run_name="__main__")
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("Epoch ")]
    assert len(lines) == 6
    test = float(out.split("Test Accuracy ")[1].split()[0])
    assert test > 0.6, out  # 7 classes: chance is about 0.3


class FakeReddit:
    """Stands in for dgl.data.RedditDataset: a small synthetic graph, no download."""

    def __init__(self, raw_dir=None, **kwargs):
        self._g = dgl_mvs.data.load_dataset("synthetic", num_nodes=1500, avg_degree=8,
                                            num_classes=4, feat_dim=16, seed=0)[0]
        self.num_classes = 4

    def __getitem__(self, i):
        return self._g

    def __len__(self):
        return 1


def test_downloaded_dataset_example_saves_and_resumes(monkeypatch, tmp_path, capsys,
                                                      examples_on_path):
    monkeypatch.setattr(dgl.data, "RedditDataset", FakeReddit)
    import downloaded_dataset

    base = ["--dataset", "reddit", "--root", str(tmp_path), "--batch-size", "64",
            "--save", str(tmp_path / "run.pt")]
    first = downloaded_dataset.main(base + ["--epochs", "2"])
    assert [e["epoch"] for e in first["epochs"]] == [0, 1]
    assert all(0 < e["variance"] < 10 for e in first["epochs"])
    resumed = downloaded_dataset.main(base + ["--epochs", "3", "--resume"])
    assert [e["epoch"] for e in resumed["epochs"]] == [2]
    assert "resumed after epoch 1" in capsys.readouterr().out
    assert resumed["test"] > 0.5, resumed  # 4 classes
    with pytest.raises(SystemExit, match="--resume needs"):
        downloaded_dataset.main(["--dataset", "reddit", "--resume"])


@pytest.mark.slow
def test_distributed_example_trains_on_two_simulated_machines(tmp_path):
    """examples/distributed_training.py local: partition, 2 servers, 2 trainers, both samplers."""
    import json
    import os
    import subprocess

    from dgl_mvs.local_cluster import namespace_prefix
    try:
        namespace_prefix()
    except RuntimeError as err:
        pytest.skip(str(err))
    root = str(EXAMPLES.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    out = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "distributed_training.py"), "local", "--num-nodes",
         "4000", "--epochs", "4", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # the exact commands are printed for the user to run by hand
    assert "$ python -m dgl_mvs.local_cluster run --part-config" in done.stdout
    results = json.loads(out.read_text())
    for name in ("mvs", "neighbor"):
        history = results[name]["history"]
        assert results[name]["trainers"] == 2 and len(history) == 4
        assert history[-1]["val_acc"] > 0.5, (name, history)  # 10 classes
