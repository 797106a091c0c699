"""The tutorial notebooks: committed with their outputs, and executed here in a Jupyter kernel
(nbclient) from top to bottom, the at-scale one at its small settings."""
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
NAMES = ["01_quickstart", "02_under_the_hood", "03_at_scale"]


def outputs(nb):
    """(all text printed, number of images) over the code cells' outputs."""
    text, images = [], 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                raise AssertionError(f"{out['ename']}: {out['evalue']}")
            if "text" in out:
                text.append(out["text"])
            data = out.get("data", {})
            images += "image/png" in data
            text.append(data.get("text/plain", ""))
    return "\n".join(text), images


def test_the_three_notebooks_are_there():
    assert [p.stem for p in NOTEBOOKS] == NAMES


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_notebooks_carry_their_outputs(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count is not None for c in code), "run before committing"
    _, images = outputs(nb)
    assert images >= 1


def check(name: str, text: str) -> None:
    """What each notebook must show, read off its printed output."""
    if name == "01_quickstart":
        added = int(re.search(r"(\d+) lines added or changed", text).group(1))
        assert added <= 8
        best = {m.group(1): float(m.group(2)) for m in re.finditer(
            r"^(NeighborSampler\(\[[\d, ]+\]\)|dgl_mvs\.MVSSampler)\s+([\d.]+) ±", text, re.M)}
        assert set(best) == {"NeighborSampler([10, 10, 10])", "dgl_mvs.MVSSampler"}
        assert best["dgl_mvs.MVSSampler"] > 0.7  # 7 classes; chance is about 0.3
    elif name == "02_under_the_hood":
        assert "sum of p: optimal 256.0, used 256.0" in text
        diff = float(re.search(r"max difference to the full graph: (\S+)", text).group(1))
        assert diff < 1e-5
        ratios = re.search(r"realised ([\d.]+), sampler's p ([\d.]+), oracle ([\d.]+)", text)
        assert 0 < float(ratios.group(3)) <= float(ratios.group(2)) + 1e-9
    else:
        assert "bit-identical: True" in text
        sums = re.findall(r"sum of weights ([-\d.]+)", text)
        assert len(sums) == 2 and sums[0] == sums[1]  # DDP replicas stay equal
        scores = re.findall(r"sum of scores ([-\d.]+)", text)
        assert len(scores) == 2 and scores[0] == scores[1]  # score tables exchanged
        assert "\n0 seeds drawn by both ranks" in text or " 0 seeds drawn by both" in text
        assert "fanouts=[-1, 8]" in text  # control variates on the dense graph
        assert len(re.findall(r"best validation", text)) == 3


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, monkeypatch):
    monkeypatch.setenv("DGL_MVS_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("DGLBACKEND", "pytorch")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK_DIR)}}).execute()
    text, images = outputs(nb)
    assert images >= 1
    check(path.stem, text)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_outputs_show_what_the_notebook_teaches(path):
    check(path.stem, outputs(nbformat.read(path, as_version=4))[0])
