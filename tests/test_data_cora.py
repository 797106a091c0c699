"""Cora from the graphdatascience wheel, the dataset contract, and load_dataset dispatch."""
import doctest
import importlib.metadata
import sys

import pytest
import torch

import dgl_mvs.data as data
from dgl_mvs.data import NodeClassificationDataset, load_cora, load_dataset
from dgl_mvs.data import cora as cora_module
from dgl_mvs.data import dataset as dataset_module

# Class sizes of the public Cora release (Neural_Networks .. Case_Based).
CORA_CLASS_SIZES = [818, 180, 217, 426, 351, 418, 298]


@pytest.fixture(scope="module")
def cora():
    return load_cora()


def _edge_keys(g):
    src, dst = g.edges()
    return src * g.num_nodes() + dst


def test_cora_shape_and_dtypes(cora):
    g = cora[0]
    assert len(cora) == 1 and cora.name == "cora"
    assert cora.num_classes == 7 and not cora.multilabel
    assert g.num_nodes() == 2708
    assert g.ndata["feat"].shape == (2708, 1433) and g.ndata["feat"].dtype == torch.float32
    label = g.ndata["label"]
    assert label.shape == (2708,) and label.dtype == torch.int64
    assert torch.bincount(label, minlength=7).tolist() == CORA_CLASS_SIZES
    # Bag-of-words features: binary, no empty document.
    feat = g.ndata["feat"]
    assert bool(((feat == 0) | (feat == 1)).all()) and bool((feat.sum(1) > 0).all())


def test_cora_graph_is_symmetric_simple_without_self_loops(cora):
    g = cora[0]
    src, dst = g.edges()
    assert g.num_edges() == 10556  # 5,278 undirected citations, as in the Planetoid graph
    assert not bool((src == dst).any())
    keys = _edge_keys(g)
    assert torch.unique(keys).numel() == keys.numel()  # no duplicate edges
    reverse = dst * g.num_nodes() + src
    assert torch.equal(torch.sort(keys).values, torch.sort(reverse).values)
    assert data.is_symmetric(g)


def test_cora_split_sizes_and_disjointness(cora):
    g = cora[0]
    train, val, test = (g.ndata[k] for k in ("train_mask", "val_mask", "test_mask"))
    for mask in (train, val, test):
        assert mask.dtype == torch.bool and mask.shape == (2708,)
    assert (int(train.sum()), int(val.sum()), int(test.sum())) == (140, 500, 1000)
    assert not bool((train & val).any() | (train & test).any() | (val & test).any())
    assert torch.bincount(g.ndata["label"][train], minlength=7).tolist() == [20] * 7


def test_cora_split_is_seeded(cora):
    masks = lambda ds: [ds[0].ndata[k] for k in ("train_mask", "val_mask", "test_mask")]
    again, other = load_cora(seed=0), load_cora(seed=1)
    assert all(torch.equal(a, b) for a, b in zip(masks(cora), masks(again)))
    assert not torch.equal(masks(cora)[0], masks(other)[0])
    # Only the split depends on the seed.
    assert torch.equal(cora[0].ndata["feat"], other[0].ndata["feat"])
    assert torch.equal(_edge_keys(cora[0]), _edge_keys(other[0]))


def test_cora_options():
    looped = load_cora(self_loop=True)[0]
    assert looped.num_edges() == 10556 + 2708
    assert bool(looped.has_edges_between(torch.arange(2708), torch.arange(2708)).all())
    normed = load_cora(row_normalize=True)[0].ndata["feat"]
    assert torch.allclose(normed.sum(1), torch.ones(2708))
    small = load_cora(per_class=5, num_val=100, num_test=200)[0]
    assert [int(small.ndata[k].sum()) for k in ("train_mask", "val_mask", "test_mask")] == [
        35, 100, 200]


def test_cora_does_not_import_the_neo4j_client(cora):
    assert not any(m == "graphdatascience" or m.startswith("graphdatascience.")
                   for m in sys.modules)


def test_cora_missing_package_says_how_to_install(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(cora_module.metadata, "distribution", missing)
    with pytest.raises(ImportError, match=r"pip install 'dgl_mvs\[data\]'"):
        load_cora()


def test_cora_docstring_warns_about_planetoid_split():
    doc = " ".join(load_cora.__doc__.split())
    assert "Planetoid split" in doc and "cannot be rebuilt" in doc


def test_load_dataset_dispatches_and_rejects_unknown_names():
    assert load_dataset("cora")[0].num_nodes() == 2708
    assert load_dataset(" Cora ", seed=3).name == "cora"
    ds = load_dataset("synthetic", num_nodes=500, avg_degree=5, seed=0)
    assert isinstance(ds, NodeClassificationDataset) and ds[0].num_nodes() == 500
    with pytest.raises(ValueError) as err:
        load_dataset("citeseer")
    for name in ("cora", "synthetic", "reddit", "ppi", "flickr", "yelp", "ogbn-arxiv",
                 "ogbn-products"):
        assert name in str(err.value)
    assert set(data.DATASETS) == {"cora", "synthetic", "reddit", "ppi", "flickr", "yelp",
                                  "ogbn-arxiv", "ogbn-products"}


def test_dataset_indexing(cora):
    assert cora.graph is cora[0]
    with pytest.raises(IndexError):
        cora[1]
    assert "nodes=2708" in repr(cora) and "train=140" in repr(cora)


@pytest.mark.parametrize("module", [data, cora_module, dataset_module])
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
