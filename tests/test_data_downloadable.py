"""Downloadable datasets without a download: conversions on hand-built graphs, loaders with
stand-in dataset classes, the message when the download fails, and the contract checks."""
import doctest
import sys
import urllib.error

import dgl
import numpy as np
import pytest
import requests
import torch

import dgl.data
from dgl_mvs.data import (
    DatasetDownloadError,
    NodeClassificationDataset,
    default_root,
    load_dataset,
    load_flickr,
    load_ogbn_arxiv,
    load_ogbn_products,
    load_ppi,
    load_reddit,
    load_yelp,
    validate_graph,
)
from dgl_mvs.data import downloadable
from dgl_mvs.data.downloadable import _from_dgl_graph, _from_ogb, _merge_ppi

MASKS = ("train_mask", "val_mask", "test_mask")


def check_contract(ds, num_classes, multilabel):
    g = ds[0]
    n = g.num_nodes()
    assert isinstance(ds, NodeClassificationDataset) and len(ds) == 1
    assert ds.num_classes == num_classes and ds.multilabel == multilabel
    assert g.ndata["feat"].dtype == torch.float32 and g.ndata["feat"].shape[0] == n
    label = g.ndata["label"]
    if multilabel:
        assert label.dtype == torch.float32 and label.shape == (n, num_classes)
        assert bool(((label == 0) | (label == 1)).all())
    else:
        assert label.dtype == torch.int64 and label.shape == (n,)
        assert 0 <= int(label.min()) and int(label.max()) < num_classes
    masks = [g.ndata[k] for k in MASKS]
    assert all(m.dtype == torch.bool and m.shape == (n,) for m in masks)
    assert int(sum(m.long() for m in masks).max()) <= 1
    assert set(g.ndata.keys()) == {"feat", "label", *MASKS}


def toy_graph(n=6, num_classes=3, multilabel=False, seed=0):
    """A small directed ring with DGL-style node data in loose dtypes, plus extra data."""
    gen = torch.Generator().manual_seed(seed)
    g = dgl.graph((torch.arange(n), (torch.arange(n) + 1) % n))
    g.ndata["feat"] = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    if multilabel:
        g.ndata["label"] = torch.randint(0, 2, (n, num_classes), generator=gen)
    else:
        g.ndata["label"] = (torch.arange(n) % num_classes).reshape(n, 1)
    part = torch.arange(n) % 3
    for i, key in enumerate(MASKS):
        g.ndata[key] = (part == i).to(torch.uint8)
    g.ndata["extra"] = torch.zeros(n)
    g.edata["weight"] = torch.ones(n)
    return g


# --------------------------------------------------------------------------- conversions

def test_from_dgl_graph_normalises_dtypes_and_drops_extras():
    g = toy_graph()
    ds = _from_dgl_graph(g, "toy", num_classes=3)
    check_contract(ds, 3, multilabel=False)
    out = ds[0]
    assert out.num_edges() == 6 and not out.edata
    assert out.ndata["label"].tolist() == [0, 1, 2, 0, 1, 2]
    assert torch.equal(out.ndata["feat"], g.ndata["feat"].float())
    assert out.ndata["train_mask"].tolist() == [True, False, False, True, False, False]
    assert ds.name == "toy"


def test_from_dgl_graph_infers_classes_and_symmetrises():
    ds = _from_dgl_graph(toy_graph(num_classes=2), "toy", symmetrize=True)
    assert ds.num_classes == 2
    g = ds[0]
    assert g.num_edges() == 12 and ds.validate(check_symmetric=True)


def test_from_dgl_graph_multilabel():
    g = toy_graph(num_classes=5, multilabel=True)
    ds = _from_dgl_graph(g, "toy", multilabel=True)
    check_contract(ds, 5, multilabel=True)
    assert torch.equal(ds[0].ndata["label"], g.ndata["label"].float())


def test_from_dgl_graph_requires_the_node_data():
    g = toy_graph()
    del g.ndata["val_mask"]
    with pytest.raises(ValueError, match="val_mask"):
        _from_dgl_graph(g, "toy")


def ppi_part(sizes, offset, seed):
    """PPI-like graphs: subgraphs of a bigger graph (so they carry dgl.NID / dgl.EID)."""
    gen = torch.Generator().manual_seed(seed)
    parts = []
    for k, n in enumerate(sizes):
        big = dgl.graph((torch.arange(n + 2), (torch.arange(n + 2) + 1) % (n + 2)))
        g = big.subgraph(torch.arange(n))
        g.ndata["feat"] = torch.full((n, 3), float(offset + k))
        g.ndata["label"] = torch.randint(0, 2, (n, 7), generator=gen).float()
        parts.append(g)
    return parts


def test_merge_ppi():
    train, val, test = ppi_part([4, 5, 3], 0, 0), ppi_part([2], 10, 1), ppi_part([3, 2], 20, 2)
    ds = _merge_ppi(train, val, test)
    check_contract(ds, 7, multilabel=True)
    g = ds[0]
    assert ds.name == "ppi" and g.num_nodes() == 19
    assert g.num_edges() == sum(p.num_edges() for p in train + val + test)
    assert [int(g.ndata[k].sum()) for k in MASKS] == [12, 2, 5]
    # Graphs are stacked in order train, valid, test; each keeps its own data and edges.
    assert g.ndata["feat"][:, 0].tolist() == [0] * 4 + [1] * 5 + [2] * 3 + [10] * 2 + \
        [20] * 3 + [21] * 2
    assert torch.equal(g.ndata["label"], torch.cat([p.ndata["label"] for p in
                                                    train + val + test]))
    assert bool(g.ndata["test_mask"][-5:].all()) and bool(g.ndata["train_mask"][:12].all())
    src, dst = g.edges()
    assert bool((src[:3] == torch.tensor([0, 1, 2])).all())  # first train graph: 0->1->2->3
    # Edges never cross graphs: both endpoints lie in the same part.
    starts = torch.tensor([0, 4, 9, 12, 14, 17, 19])
    assert torch.equal(torch.bucketize(src, starts, right=True),
                       torch.bucketize(dst, starts, right=True))


def test_merge_ppi_needs_training_graphs():
    with pytest.raises(ValueError, match="training"):
        _merge_ppi([], ppi_part([2], 0, 0), ppi_part([2], 0, 0))


def test_from_ogb():
    g = dgl.graph(([0, 1, 2, 3], [1, 2, 3, 0]), num_nodes=5)
    g.ndata["feat"] = torch.arange(10, dtype=torch.float32).reshape(5, 2)
    label = torch.tensor([[3], [0], [1], [2], [3]])
    split = {"train": torch.tensor([0, 1]), "valid": np.array([2]), "test": torch.tensor([3])}
    ds = _from_ogb(g, label, split, "ogbn-toy", num_classes=4, symmetrize=True)
    check_contract(ds, 4, multilabel=False)
    out = ds[0]
    assert out.ndata["label"].tolist() == [3, 0, 1, 2, 3]
    assert out.ndata["train_mask"].tolist() == [True, True, False, False, False]
    assert out.ndata["val_mask"].tolist() == [False, False, True, False, False]
    assert out.ndata["test_mask"].tolist() == [False, False, False, True, False]
    assert out.num_edges() == 8 and ds.validate(check_symmetric=True)
    # Without symmetrize the edges stay as given; classes are inferred when not passed.
    plain = _from_ogb(g, label.float(), split, "ogbn-toy")
    assert plain[0].num_edges() == 4 and plain.num_classes == 4


def test_from_ogb_rejects_missing_or_misaligned_labels():
    g = dgl.graph(([0], [1]), num_nodes=3)
    g.ndata["feat"] = torch.zeros(3, 2)
    split = {"train": [0], "valid": [1], "test": [2]}
    with pytest.raises(ValueError, match="NaN"):
        _from_ogb(g, torch.tensor([[0.0], [float("nan")], [1.0]]), split, "x")
    with pytest.raises(ValueError, match="labels for 3 nodes"):
        _from_ogb(g, torch.tensor([0, 1]), split, "x")


# --------------------------------------------------------- loaders with stand-in classes

class FakeDGLDataset:
    """Stands in for dgl.data.RedditDataset & co.: records its arguments, serves a toy."""

    calls = []

    def __init__(self, raw_dir=None, **kwargs):
        FakeDGLDataset.calls.append(dict(raw_dir=raw_dir, **kwargs))
        self.num_classes = self.NUM_CLASSES
        self._g = toy_graph(num_classes=self.NUM_CLASSES, multilabel=self.MULTILABEL)

    def __getitem__(self, i):
        return self._g

    def __len__(self):
        return 1


@pytest.mark.parametrize("cls_name, loader, num_classes, multilabel", [
    ("RedditDataset", load_reddit, 3, False),
    ("FlickrDataset", load_flickr, 3, False),
    ("YelpDataset", load_yelp, 5, True),
])
def test_dgl_loaders_convert_what_dgl_returns(monkeypatch, tmp_path, cls_name, loader,
                                             num_classes, multilabel):
    fake = type(cls_name, (FakeDGLDataset,), {"NUM_CLASSES": num_classes,
                                              "MULTILABEL": multilabel})
    monkeypatch.setattr(dgl.data, cls_name, fake)
    FakeDGLDataset.calls.clear()
    ds = loader(root=tmp_path)
    check_contract(ds, num_classes, multilabel)
    assert FakeDGLDataset.calls[0]["raw_dir"] == str(tmp_path)


def test_ppi_loader_merges_the_three_modes(monkeypatch, tmp_path):
    modes = []

    class FakePPI:
        def __init__(self, mode="train", raw_dir=None, verbose=False):
            modes.append((mode, raw_dir))
            sizes = {"train": [3, 4], "valid": [2], "test": [5]}[mode]
            self.graphs = ppi_part(sizes, 0, len(modes))

        def __getitem__(self, i):
            return self.graphs[i]

        def __len__(self):
            return len(self.graphs)

    monkeypatch.setattr(dgl.data, "PPIDataset", FakePPI)
    ds = load_dataset("ppi", root=tmp_path)
    check_contract(ds, 7, multilabel=True)
    assert modes == [(m, str(tmp_path)) for m in ("train", "valid", "test")]
    assert [int(ds[0].ndata[k].sum()) for k in MASKS] == [7, 2, 5]


def fake_ogb_class(record):
    class FakeOGB:
        def __init__(self, name, root="dataset"):
            record.append((name, root))
            self.num_classes = 4
            self.graph = dgl.graph(([0, 1, 2], [1, 2, 3]), num_nodes=4)
            self.graph.ndata["feat"] = torch.ones(4, 2)

        def __getitem__(self, i):
            return self.graph, torch.tensor([[0], [1], [2], [3]])

        def get_idx_split(self):
            return {"train": torch.tensor([0, 1]), "valid": torch.tensor([2]),
                    "test": torch.tensor([3])}

    return FakeOGB


@pytest.fixture
def ogb_stub(monkeypatch):
    """A stand-in ``ogb.nodeproppred`` module, so these tests need no ogb install.

    ogb is not in the test extras: importing it (which ``import dgl`` does whenever it is
    installed) starts a version check against PyPI, and tests use no network.
    """
    import types

    ogb = types.ModuleType("ogb")
    nodeproppred = types.ModuleType("ogb.nodeproppred")
    nodeproppred.DglNodePropPredDataset = None
    ogb.nodeproppred = nodeproppred
    monkeypatch.setitem(sys.modules, "ogb", ogb)
    monkeypatch.setitem(sys.modules, "ogb.nodeproppred", nodeproppred)
    return nodeproppred


def test_ogb_loaders(monkeypatch, tmp_path, ogb_stub):
    record = []
    monkeypatch.setattr(ogb_stub, "DglNodePropPredDataset", fake_ogb_class(record))
    arxiv = load_ogbn_arxiv(root=tmp_path)
    products = load_dataset("ogbn_products", root=tmp_path)
    assert record == [("ogbn-arxiv", str(tmp_path)), ("ogbn-products", str(tmp_path))]
    for ds in (arxiv, products):
        check_contract(ds, 4, multilabel=False)
    assert arxiv[0].num_edges() == 6 and arxiv.validate(check_symmetric=True)  # symmetrised
    assert products[0].num_edges() == 3  # ogbn-products ships symmetric; left as is


def test_ogb_missing_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ogb.nodeproppred", None)  # makes the import fail
    with pytest.raises(ImportError, match=r"pip install ogb"):
        load_ogbn_arxiv()


# ------------------------------------------------------------------ download failures

def _offline(*args, **kwargs):
    raise requests.exceptions.ConnectionError("Failed to resolve 'data.dgl.ai'")


LOADERS = [
    ("RedditDataset", load_reddit, "Reddit", "reddit"),
    ("FlickrDataset", load_flickr, "Flickr", "flickr"),
    ("YelpDataset", load_yelp, "Yelp", "yelp"),
    ("PPIDataset", load_ppi, "PPI", "ppi"),
]


@pytest.mark.parametrize("cls_name, loader, display, folder", LOADERS)
def test_dgl_download_failure_is_explained(monkeypatch, tmp_path, cls_name, loader, display,
                                           folder):
    monkeypatch.setattr(dgl.data, cls_name, _offline)
    with pytest.raises(RuntimeError) as err:
        loader(root=tmp_path)
    assert isinstance(err.value, DatasetDownloadError)
    message = str(err.value)
    assert display in message and "network" in message
    assert str(tmp_path / folder) in message
    assert isinstance(err.value.__cause__, requests.exceptions.ConnectionError)


@pytest.mark.parametrize("loader, name, folder", [
    (load_ogbn_arxiv, "ogbn-arxiv", "ogbn_arxiv"),
    (load_ogbn_products, "ogbn-products", "ogbn_products"),
])
def test_ogb_download_failure_is_explained(monkeypatch, tmp_path, loader, name, folder,
                                           ogb_stub):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(ogb_stub, "DglNodePropPredDataset", offline)
    with pytest.raises(DatasetDownloadError) as err:
        loader(root=tmp_path)
    message = str(err.value)
    assert name in message and "network" in message and str(tmp_path / folder) in message


def test_real_dgl_class_with_its_download_cut(monkeypatch, tmp_path):
    """The genuine FlickrDataset code path, with only its HTTP request failing."""
    monkeypatch.setattr(dgl.data.dgl_dataset, "download", _offline)
    with pytest.raises(DatasetDownloadError, match="Flickr") as err:
        load_flickr(root=tmp_path)
    assert str(tmp_path / "flickr") in str(err.value)


def test_real_ogb_class_with_its_download_cut(monkeypatch, tmp_path):
    """The genuine DglNodePropPredDataset code path, with only its HTTP request failing."""
    ogb_dgl = pytest.importorskip("ogb.nodeproppred.dataset_dgl")  # runs where ogb is installed

    def offline(url):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(ogb_dgl, "decide_download", offline)
    with pytest.raises(DatasetDownloadError, match="ogbn-arxiv") as err:
        load_ogbn_arxiv(root=tmp_path)
    assert str(tmp_path / "ogbn_arxiv") in str(err.value)


def test_ogb_declined_prompt_is_explained(monkeypatch, tmp_path, ogb_stub):
    def declined(name, root):
        raise SystemExit(-1)  # what ogb does when its "proceed? (y/N)" gets "n"

    monkeypatch.setattr(ogb_stub, "DglNodePropPredDataset", declined)
    with pytest.raises(DatasetDownloadError, match="declined"):
        load_ogbn_products(root=tmp_path)


def test_default_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(downloadable.DATA_DIR_ENV, str(tmp_path / "cache"))
    assert default_root() == tmp_path / "cache"
    monkeypatch.setattr(dgl.data, "RedditDataset", _offline)
    with pytest.raises(DatasetDownloadError, match=str(tmp_path / "cache" / "reddit")):
        load_reddit()
    monkeypatch.delenv(downloadable.DATA_DIR_ENV)
    assert default_root().parts[-2:] == (".dgl_mvs", "data")


# ------------------------------------------------------------------- contract checks

def good_graph():
    g = dgl.graph(([0, 1, 2], [1, 2, 0]), num_nodes=3)
    g.ndata["feat"] = torch.zeros(3, 2)
    g.ndata["label"] = torch.tensor([0, 1, 1])
    g.ndata["train_mask"] = torch.tensor([True, False, False])
    g.ndata["val_mask"] = torch.tensor([False, True, False])
    g.ndata["test_mask"] = torch.tensor([False, False, True])
    return g


def _break(key, value):
    def apply(g):
        g.ndata[key] = value
        return g
    return apply


def _drop(key):
    def apply(g):
        del g.ndata[key]
        return g
    return apply


def _hetero(g):
    return dgl.heterograph({("a", "r", "b"): ([0], [0])})


@pytest.mark.parametrize("mutate, problem", [
    (_drop("feat"), "lacks"),
    (_break("feat", torch.zeros(3, 2, dtype=torch.float64)), "float32"),
    (_break("feat", torch.tensor([[0.0, 1.0], [float("nan"), 0.0], [0.0, 0.0]])), "NaN"),
    (_break("feat", torch.tensor([[0.0, 1.0], [float("inf"), 0.0], [0.0, 0.0]])), "NaN"),
    (_break("label", torch.tensor([0, 2, 1])), "outside"),
    (_break("label", torch.tensor([0, -1, 1])), "outside"),
    (_break("label", torch.tensor([0.0, 1.0, 1.0])), "int64"),
    (_break("val_mask", torch.tensor([True, True, False])), "overlap"),
    (_break("test_mask", torch.tensor([0, 0, 1])), "bool"),
    (_break("train_mask", torch.tensor([False, False, False])), "no node"),
    (_hetero, "homogeneous"),
])
def test_validate_names_the_problem(mutate, problem):
    with pytest.raises(ValueError, match=problem) as err:
        NodeClassificationDataset(mutate(good_graph()), num_classes=2, name="toy")
    assert str(err.value).startswith("toy:")


def test_validate_multilabel_and_symmetry():
    g = good_graph()
    g.ndata["label"] = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    ds = NodeClassificationDataset(g, num_classes=2, name="toy")
    assert ds.multilabel  # inferred from the 2-D label
    g.ndata["label"] = torch.tensor([[1.0, 0.5], [0.0, 1.0], [1.0, 1.0]])
    with pytest.raises(ValueError, match="only 0 and 1"):
        ds.validate()
    with pytest.raises(ValueError, match="shape"):
        validate_graph(g, num_classes=3, multilabel=True)
    g.ndata["label"] = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    with pytest.raises(ValueError, match="not symmetric"):
        ds.validate(check_symmetric=True)
    # validate=False defers the check (useful while a loader builds the graph).
    bad = good_graph()
    bad.ndata["label"] = torch.tensor([5, 5, 5])
    NodeClassificationDataset(bad, num_classes=2, name="toy", validate=False)


def test_docstring_examples_run():
    assert doctest.testmod(downloadable).failed == 0
