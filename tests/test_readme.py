"""The documented code is real code: the user guide's complete loop runs (on Cora, a few
epochs); the README's diff, applied to DGL's GraphSAGE example, trains with SAGE, GCN, GIN
and GAT layers; the README's commands are the Makefile's and CI's; the README stays a front
page, and every link between the documentation pages leads somewhere."""
import doctest
import re
import warnings
from pathlib import Path

import dgl
import dgl.nn as dglnn
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from dgl.dataloading import DataLoader, NeighborSampler

import dgl_mvs
from conftest import random_graph

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
USER_GUIDE = ROOT / "docs" / "user_guide.md"


def test_user_guide_loop_runs():
    code = re.findall(r"```python\n(.*?)```", USER_GUIDE.read_text(), re.S)[0]
    assert "range(20)" in code and "# MVS" in code
    code = code.replace("range(20)", "range(2)")
    namespace: dict = {}
    exec(compile(code, str(USER_GUIDE), "exec"), namespace)
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
    """The diff's added lines are the ones the user guide's runnable loop marks # MVS."""
    text = README.read_text()
    diff = re.findall(r"```diff\n(.*?)```", text, re.S)[0]
    added = [line[1:].strip() for line in diff.splitlines() if line.startswith("+")]
    assert any("MVSSampler(" in line for line in added)
    assert any("update_scores" in line for line in added)
    assert any("evaluation_sampler()" in line for line in added)  # the validation loader
    assert len([line for line in diff.splitlines() if line[:1] in "+-"]) <= 10
    loop = re.findall(r"```python\n(.*?)```", USER_GUIDE.read_text(), re.S)[0]
    marked = [line for line in loop.splitlines() if "# MVS" in line]
    for call in ("MVSSampler(", "step_ids()", "set_epoch(", "mvs_weight", "update_scores("):
        assert any(call in line for line in added) and any(call in line for line in marked)


def test_readme_commands_match_makefile_and_ci():
    readme = README.read_text()
    assert "make demo" in readme and "make test" in readme
    ci = (README.parent / ".ci" / "run").read_text()
    assert "make test" in ci
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)


def test_readme_is_a_front_page():
    """Under 12 KB, no internal issue tags, and links to every documentation page."""
    text = README.read_text()
    assert len(text.encode()) < 12_000, len(text.encode())
    assert not re.search(r'\(issue "', text)
    for page in DOC_PAGES:
        if page != README:
            assert f"{page.relative_to(ROOT).as_posix()})" in text, page


DOC_PAGES = [README, ROOT / "CONTRIBUTING.md", ROOT / "CHANGELOG.md",
             *sorted((ROOT / "docs").glob("*.md"))]


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"```.*?```", "", markdown, flags=re.S)
    headings = re.findall(r"^#{1,6} +(.+?) *$", text, re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_doc_examples_run():
    """The interactive examples (``>>>``) of the documentation pages give what they show."""
    pages = [page for page in DOC_PAGES if ">>> " in page.read_text()]
    assert ROOT / "docs" / "blocks.md" in pages  # the cost rule's example
    for page in pages:
        examples = "\n\n".join(block for block in re.findall(r"```\w*\n(.*?)```",
                                                             page.read_text(), re.S)
                               if block.startswith(">>> "))
        test = doctest.DocTestParser().get_doctest(examples, {}, page.name, str(page), 0)
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        runner.run(test)
        assert test.examples and runner.summarize(verbose=False).failed == 0, page.name


@pytest.mark.parametrize("page", DOC_PAGES, ids=lambda p: p.name)
def test_doc_links_resolve(page):
    """Every relative link of the README and the docs names a file that exists, and an anchor
    that a heading of that file gives."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # an external address
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.exists(), f"{page.name}: {target}"
        if anchor:
            assert anchor in _anchors(file.read_text()), f"{page.name}: {target}"


class ExampleModel(nn.Module):
    """DGL's graphsage/node_classification.py model (3 layers, dropout 0.5), with its
    SAGEConv layers switched to another kind, as a user would switch them."""

    def __init__(self, kind, in_size, hid_size, out_size):
        super().__init__()
        self.kind = kind
        sizes = [in_size, hid_size, hid_size, out_size]
        self.layers = nn.ModuleList([self._layer(a, b, last=i == 2)
                                     for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))])
        self.dropout = nn.Dropout(0.5)

    def _layer(self, a, b, last):
        if self.kind == "sage":
            return dglnn.SAGEConv(a, b, "mean")
        if self.kind == "gcn":
            return dglnn.GraphConv(a, b)
        if self.kind == "gin":
            return dglnn.GINConv(nn.Linear(a, b))
        heads = 1 if last else 2  # DGL's GAT example: heads concatenated, averaged at the end
        return dglnn.GATConv(a, b // heads, num_heads=heads)

    def forward(self, blocks, x):
        h = x
        for l, (layer, block) in enumerate(zip(self.layers, blocks)):
            h = layer(block, h)
            if self.kind == "gat":
                h = h.flatten(1) if l != len(self.layers) - 1 else h.mean(1)
            if l != len(self.layers) - 1:
                h = F.relu(h)
                h = self.dropout(h)
        return h


def evaluate(model, graph, dataloader, num_classes):  # DGL's, without torchmetrics
    model.eval()
    ys, y_hats = [], []
    for input_nodes, output_nodes, blocks in dataloader:
        with torch.no_grad():
            ys.append(blocks[-1].dstdata["label"])
            y_hats.append(model(blocks, blocks[0].srcdata["feat"]))
    return (torch.cat(y_hats).argmax(1) == torch.cat(ys)).float().mean()


def diff_as_code() -> str:
    """The README diff's new side: its context and added lines."""
    diff = re.findall(r"```diff\n(.*?)```", README.read_text(), re.S)[0]
    return "\n".join(line[1:] for line in diff.splitlines() if line[:1] in " +")


@pytest.mark.parametrize("kind", ["sage", "gcn", "gin", "gat"])
def test_readme_diff_trains_dgls_example_on_the_first_try(kind):
    """DGL's example with the README's diff applied trains and validates as it stands, with
    SAGE, GCN, GIN and GAT layers; GAT gets DGL's sampled blocks and a warning saying so."""
    g = dgl.add_self_loop(random_graph(num_nodes=300, num_edges=2000))  # DGL's GCN/GAT do
    torch.manual_seed(0)
    namespace = dict(
        dgl_mvs=dgl_mvs, DataLoader=DataLoader, NeighborSampler=NeighborSampler, torch=torch,
        F=F, g=g, train_idx=torch.arange(150), val_idx=torch.arange(150, 250),
        model=ExampleModel(kind, 12, 16, 5), num_classes=5, evaluate=evaluate,
    )
    code = diff_as_code().replace("range(10)", "range(2)").replace("1024", "32")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(compile(code, "README diff", "exec"), namespace)
    fallback = [w for w in caught if "uses DGL's NeighborSampler([10, 10, 10])" in str(w.message)]
    assert len(fallback) == (kind == "gat"), [str(w.message) for w in caught]
    if kind == "gat":
        assert "layer 0 (GATConv) does not aggregate its input linearly" in str(
            fallback[0].message)
        assert "pass block_sampler=dgl.dataloading.NeighborSampler" in str(fallback[0].message)
    sampler = namespace["sampler"]
    assert sampler.block_kind == ("custom" if kind == "gat" else "onehop")
    assert torch.isfinite(namespace["loss"]) and 0.0 <= float(namespace["acc"]) <= 1.0
    assert float(sampler.scores.written(torch.arange(150)).float().mean()) > 0.5
