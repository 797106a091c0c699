"""The DC-SBM generator: contract, reproducibility, heavy tails, homophily, feature signal."""
import doctest

import dgl
import dgl.function as fn
import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from dgl_mvs.data import load_dataset, synthetic_graph
from dgl_mvs.data import synthetic as synthetic_module

MASKS = ("train_mask", "val_mask", "test_mask")
SMALL = dict(num_nodes=3000, avg_degree=10, num_classes=5, feat_dim=32)


def check_contract(ds, num_nodes, num_classes, feat_dim, multilabel):
    """The NodeClassificationDataset contract, checked independently of validate()."""
    g = ds[0]
    assert len(ds) == 1 and ds.num_classes == num_classes and ds.multilabel == multilabel
    assert g.num_nodes() == num_nodes and g.is_homogeneous
    assert g.ndata["feat"].shape == (num_nodes, feat_dim)
    assert g.ndata["feat"].dtype == torch.float32
    assert bool(torch.isfinite(g.ndata["feat"]).all())
    label = g.ndata["label"]
    if multilabel:
        assert label.dtype == torch.float32 and label.shape == (num_nodes, num_classes)
        assert bool(((label == 0) | (label == 1)).all())
    else:
        assert label.dtype == torch.int64 and label.shape == (num_nodes,)
        assert 0 <= int(label.min()) and int(label.max()) < num_classes
    masks = [g.ndata[k] for k in MASKS]
    for mask in masks:
        assert mask.dtype == torch.bool and mask.shape == (num_nodes,)
    assert int(sum(m.long() for m in masks).max()) <= 1  # pairwise disjoint
    # Symmetric, simple, no self-loops.
    src, dst = g.edges()
    assert not bool((src == dst).any())
    keys = src * num_nodes + dst
    assert torch.unique(keys).numel() == keys.numel()
    assert torch.equal(torch.sort(keys).values, torch.sort(dst * num_nodes + src).values)
    ds.validate(check_symmetric=True)


def neighbour_mean(g, x):
    """Mean of each node's own and its neighbours' rows."""
    h = dgl.add_self_loop(g)
    h.ndata["x"] = x
    h.update_all(fn.copy_u("x", "m"), fn.mean("m", "x"))
    return h.ndata["x"]


def linear_accuracy(x, g):
    y, train, test = g.ndata["label"], g.ndata["train_mask"], g.ndata["test_mask"]
    clf = LogisticRegression(max_iter=300).fit(x[train].numpy(), y[train].numpy())
    return clf.score(x[test].numpy(), y[test].numpy())


@pytest.fixture(scope="module")
def small():
    return synthetic_graph(**SMALL, signal_to_noise=2.0, seed=0)


def test_contract_and_sizes(small):
    check_contract(small, 3000, 5, 32, multilabel=False)
    g = small[0]
    assert small.name == "synthetic"
    assert [int(g.ndata[k].sum()) for k in MASKS] == [1800, 600, 600]
    # About num_nodes * avg_degree directed edges (duplicates removed, then topped up).
    assert 0.97 * 30_000 <= g.num_edges() <= 1.01 * 30_000


def test_defaults_and_load_dataset():
    ds = load_dataset("synthetic", num_nodes=1000, seed=5)
    check_contract(ds, 1000, 10, 64, multilabel=False)
    assert 0.95 * 20_000 <= ds[0].num_edges() <= 1.01 * 20_000


def test_reproducible_for_a_seed_and_different_across_seeds():
    def snapshot(ds):
        g = ds[0]
        return [*g.edges(), *(g.ndata[k] for k in ("feat", "label", *MASKS))]

    a, b = snapshot(synthetic_graph(**SMALL, seed=7)), snapshot(synthetic_graph(**SMALL, seed=7))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    c = snapshot(synthetic_graph(**SMALL, seed=8))
    assert a[0].shape != c[0].shape or not torch.equal(a[0], c[0])  # edges differ
    for x, y in zip(a[2:], c[2:]):  # so do features, labels and masks
        assert not torch.equal(x, y)


def test_feature_options_leave_graph_and_split_unchanged():
    a = synthetic_graph(**SMALL, seed=3)[0]
    b = synthetic_graph(**{**SMALL, "feat_dim": 8}, signal_to_noise=0.3, seed=3)[0]
    assert all(torch.equal(x, y) for x, y in zip(a.edges(), b.edges()))
    for key in ("label", *MASKS):
        assert torch.equal(a.ndata[key], b.ndata[key])


def test_degrees_are_heavy_tailed():
    kwargs = dict(num_nodes=5000, avg_degree=10, num_classes=5, feat_dim=4, seed=0)
    deg = synthetic_graph(**kwargs)[0].in_degrees().double()
    assert deg.max() / deg.median() > 20
    # Hill estimate of the tail index over the top 5% of degrees: a power law with
    # exponent 2.5 has tail index ~1.5; Poisson-like degrees give a much larger value.
    top = torch.sort(deg, descending=True).values[:250]
    hill = 1.0 / torch.log(top[:-1] / top[-1]).mean()
    assert 1.0 < hill < 2.5
    # A plain SBM (equal propensities) is light-tailed.
    flat = synthetic_graph(**kwargs, power_law_exponent=None)[0].in_degrees().double()
    assert flat.max() / flat.median() < 3
    # A steeper power law gives a lighter tail than a flatter one.
    steep = synthetic_graph(**kwargs, power_law_exponent=3.5)[0].in_degrees().double()
    assert steep.max() < deg.max()


@pytest.mark.parametrize("homophily", [0.2, 0.5, 0.9])
def test_homophily_is_the_intra_class_edge_fraction(homophily):
    g = synthetic_graph(5000, avg_degree=10, num_classes=5, feat_dim=4, homophily=homophily,
                        seed=1)[0]
    src, dst = g.edges()
    label = g.ndata["label"]
    observed = float((label[src] == label[dst]).double().mean())
    assert abs(observed - homophily) < 0.02


def test_features_carry_class_signal_and_the_graph_adds_more(small):
    g = small[0]
    x = g.ndata["feat"]
    chance = 1.0 / small.num_classes
    raw = linear_accuracy(x, g)
    smoothed = linear_accuracy(neighbour_mean(g, x), g)
    assert raw > 2.0 * chance
    assert smoothed > raw + 0.15


def test_zero_signal_features_are_noise():
    ds = synthetic_graph(**SMALL, signal_to_noise=0.0, seed=0)
    assert linear_accuracy(ds[0].ndata["feat"], ds[0]) < 1.5 / ds.num_classes


def macro_auc(x, y, train, test):
    """Macro ROC-AUC of one-vs-rest logistic regressions over the labels seen in both sets."""
    present = (y[train].sum(0) > 0) & (y[test].sum(0) > 0)
    targets, x = y[:, present].numpy(), x.numpy()
    train, test = train.numpy(), test.numpy()
    scores = np.stack([
        LogisticRegression(max_iter=300).fit(x[train], targets[train, j])
        .decision_function(x[test])
        for j in range(targets.shape[1])
    ], axis=1)
    return roc_auc_score(targets[test], scores, average="macro")


def test_multilabel_contract_signal_and_homophily():
    ds = synthetic_graph(num_nodes=3000, avg_degree=10, num_classes=4, feat_dim=32,
                         homophily=0.9, multilabel=True, num_labels=8, labels_per_node=3,
                         signal_to_noise=1.0, seed=0)
    check_contract(ds, 3000, 8, 32, multilabel=True)
    g = ds[0]
    y = g.ndata["label"]
    per_node = y.sum(1)
    assert int(per_node.min()) >= 1 and int(per_node.max()) <= 3
    # Neighbours share labels more often than random pairs do (labels follow the blocks).
    src, dst = g.edges()
    perm = torch.randperm(3000, generator=torch.Generator().manual_seed(0))
    assert (y[src] * y[dst]).sum(1).mean() > 1.2 * (y * y[perm]).sum(1).mean()
    # Features predict labels; averaging over neighbours (same block) predicts them better.
    train, test = g.ndata["train_mask"], g.ndata["test_mask"]
    raw = macro_auc(g.ndata["feat"], y, train, test)
    smoothed = macro_auc(neighbour_mean(g, g.ndata["feat"]), y, train, test)
    assert raw > 0.62
    assert smoothed > raw + 0.03


def test_multilabel_default_label_count():
    ds = synthetic_graph(num_nodes=500, num_classes=3, multilabel=True, seed=0)
    assert ds.num_classes == 6 and ds[0].ndata["label"].shape == (500, 6)


def test_edge_cases():
    one = synthetic_graph(num_nodes=200, avg_degree=4, num_classes=1, homophily=0.5, seed=0)
    check_contract(one, 200, 1, 64, multilabel=False)
    tiny = synthetic_graph(num_nodes=10, avg_degree=3, num_classes=4, feat_dim=8, seed=0)
    check_contract(tiny, 10, 4, 8, multilabel=False)
    # More classes than feature dimensions: means are random directions, not orthogonal.
    wide = synthetic_graph(num_nodes=500, num_classes=20, feat_dim=4, seed=0)
    check_contract(wide, 500, 20, 4, multilabel=False)
    partial = synthetic_graph(num_nodes=1000, train_frac=0.1, val_frac=0.1, test_frac=0.1)[0]
    assert [int(partial.ndata[k].sum()) for k in MASKS] == [100, 100, 100]


@pytest.mark.parametrize("kwargs", [
    dict(num_nodes=1),
    dict(avg_degree=0),
    dict(homophily=1.5),
    dict(power_law_exponent=1.8),
    dict(signal_to_noise=-1.0),
    dict(train_frac=0.8, val_frac=0.2, test_frac=0.2),
    dict(multilabel=True, labels_per_node=0),
])
def test_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        synthetic_graph(**{"num_nodes": 100, **kwargs})


def test_docstring_examples_run():
    assert doctest.testmod(synthetic_module).failed == 0
