"""The README's loop is real code: run it (on Cora, a few epochs)."""
import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_loop_runs():
    code = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)[0]
    code = code.replace("range(20)", "range(2)")
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    assert namespace["loss"].item() > 0
    sampler, g = namespace["sampler"], namespace["g"]
    assert sampler.block_kind == "onehop"
    # Steps scored (most of) the training nodes, and only those; a refresh scores them all.
    train = namespace["train_nids"]
    assert float(sampler.scores.written(train).float().mean()) > 0.5
    sampler.refresh_scores()
    assert bool(sampler.scores.written(train).all())
    others = torch.nonzero(~g.ndata["train_mask"]).squeeze(1)
    assert not bool(sampler.scores.written(others).any())


def test_readme_diff_is_the_loop():
    """The diff's added lines are the ones the runnable loop marks # MVS."""
    text = README.read_text()
    diff = re.findall(r"```diff\n(.*?)```", text, re.S)[0]
    added = [line[1:].strip() for line in diff.splitlines() if line.startswith("+")]
    assert any("MVSSampler(" in line for line in added)
    assert any("update_scores" in line for line in added)
    assert len([line for line in diff.splitlines() if line[:1] in "+-"]) <= 8


def test_readme_commands_match_makefile_and_ci():
    readme = README.read_text()
    assert "make demo" in readme and "make test" in readme
    ci = (README.parent / ".ci" / "run").read_text()
    assert "make test" in ci
