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
    sampler = namespace["sampler"]
    # Every checkpoint scores its whole pool: all pools of the 2 epochs are written.
    steps = 2 * sampler.steps_per_epoch
    intervals = range(-(-steps // sampler.checkpoint_every))
    pools = torch.cat([sampler.pool(i) for i in intervals])
    assert bool(sampler.scores.written(pools).all())
    others = torch.nonzero(~namespace["g"].ndata["train_mask"]).squeeze(1)
    assert not bool(sampler.scores.written(others).any())  # only training nodes are scored


def test_readme_commands_match_makefile_and_ci():
    readme = README.read_text()
    assert "make demo" in readme and "make test" in readme
    ci = (README.parent / ".ci" / "run").read_text()
    assert "make test" in ci
