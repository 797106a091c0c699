"""The tutorial notebooks run top to bottom (their code cells, executed in order)."""
import json
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")
NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, capsys):
    cells = json.loads(path.read_text())["cells"]
    namespace: dict = {"__name__": "__main__"}
    for i, cell in enumerate(c for c in cells if c["cell_type"] == "code"):
        exec(compile("".join(cell["source"]), f"{path.name}[cell {i}]", "exec"), namespace)
    printed = capsys.readouterr().out
    assert "max difference to the full graph" in printed
    assert namespace["evaluate"](namespace["model"], namespace["history"],
                                 {"t": namespace["g"].ndata["test_mask"]})["t"] > 0.7
