"""Gradient-norm scores against per-sample autograd, and the shared score table."""
import dgl
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from dgl_mvs.scores import (
    ScoreTable,
    autograd_grad_norm,
    bce_grad_norm,
    cross_entropy_grad_norm,
)

N, FEAT, C = 12, 6, 5


def linear_batch(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    lin = torch.nn.Linear(FEAT, C).to(dtype)
    a = torch.randn(N, FEAT, dtype=dtype) * 2
    return lin, a


def per_sample_param_grad_norms(lin, a, loss_of_row):
    """Loop over samples: ||d loss_i / d (W, b)|| by autograd, the ground truth."""
    out = []
    for i in range(a.shape[0]):
        z = lin(a[i:i + 1])
        gw, gb = torch.autograd.grad(loss_of_row(z, i), [lin.weight, lin.bias])
        out.append(torch.sqrt((gw * gw).sum() + (gb * gb).sum()))
    return torch.stack(out)


def per_sample_logit_grad_norms(logits, loss_of_row):
    out = []
    for i in range(logits.shape[0]):
        z = logits[i:i + 1].detach().requires_grad_()
        (gz,) = torch.autograd.grad(loss_of_row(z, i), [z])
        out.append(gz.norm())
    return torch.stack(out)


def test_cross_entropy_matches_per_sample_autograd():
    lin, a = linear_batch()
    y = torch.randint(0, C, (N,))

    def loss(z, i):
        return F.cross_entropy(z, y[i:i + 1])

    logits = lin(a)
    got = cross_entropy_grad_norm(logits, y, last_input=a)
    torch.testing.assert_close(got, per_sample_param_grad_norms(lin, a, loss), rtol=1e-10, atol=0)
    got = cross_entropy_grad_norm(logits, y)
    torch.testing.assert_close(got, per_sample_logit_grad_norms(logits, loss), rtol=1e-10,
                               atol=0)
    assert got.shape == (N,) and not got.requires_grad and got.dtype == torch.float64


def test_cross_entropy_confident_rows_keep_relative_accuracy_in_float32():
    logits = torch.tensor([[30.0, 0.0, -5.0], [0.0, 25.0, 1.0]])
    y = torch.tensor([0, 1])
    got = cross_entropy_grad_norm(logits, y)
    ref = cross_entropy_grad_norm(logits.double(), y)
    assert bool((got > 0).all())
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=0)


@pytest.mark.parametrize("mean_over_classes", [True, False])
def test_bce_matches_per_sample_autograd(mean_over_classes):
    lin, a = linear_batch(1)
    y = (torch.rand(N, C) < 0.4).double()
    reduce = (lambda t: t.mean(1)) if mean_over_classes else (lambda t: t.sum(1))

    def loss(z, i):
        return reduce(F.binary_cross_entropy_with_logits(z, y[i:i + 1], reduction="none")).sum()

    logits = lin(a)
    got = bce_grad_norm(logits, y, last_input=a, mean_over_classes=mean_over_classes)
    torch.testing.assert_close(got, per_sample_param_grad_norms(lin, a, loss), rtol=1e-10, atol=0)
    got = bce_grad_norm(logits, y, mean_over_classes=mean_over_classes)
    torch.testing.assert_close(got, per_sample_logit_grad_norms(logits, loss), rtol=1e-10,
                               atol=0)


def test_bce_one_dimensional_is_one_class():
    z, t = torch.tensor([0.0, 2.0]), torch.tensor([1.0, 0.0])
    torch.testing.assert_close(bce_grad_norm(z, t), (torch.sigmoid(z) - t).abs())


def test_autograd_generic_loss_matches_and_keeps_graph():
    lin, a = linear_batch(2)
    y = torch.randint(0, C, (N,))

    def loss_rows(z, idx):  # label smoothing: no closed form here
        return F.cross_entropy(z, y[idx], reduction="none", label_smoothing=0.1)

    logits = lin(a)
    per_node = loss_rows(logits, torch.arange(N))
    got = autograd_grad_norm(per_node, logits, last_input=a)

    def loss(z, i):
        return loss_rows(z, torch.tensor([i])).sum()

    torch.testing.assert_close(got, per_sample_param_grad_norms(lin, a, loss), rtol=1e-10, atol=0)
    assert not got.requires_grad
    # The caller's backward still works (retain_graph) and is unaffected.
    (per_node * 0.5).sum().backward()
    assert lin.weight.grad is not None
    # The generic path agrees with the closed form for plain cross-entropy.
    logits = lin(a)
    ce = F.cross_entropy(logits, y, reduction="none")
    torch.testing.assert_close(autograd_grad_norm(ce, logits), cross_entropy_grad_norm(logits, y))


def test_score_errors():
    z = torch.zeros(3, 4)
    with pytest.raises(ValueError, match="2-D"):
        cross_entropy_grad_norm(torch.zeros(3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="entries but logits has 3 rows"):
        cross_entropy_grad_norm(z, torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
        cross_entropy_grad_norm(z, torch.tensor([0, 4, 1]))
    with pytest.raises(ValueError, match="integer tensor"):
        cross_entropy_grad_norm(z, torch.zeros(3))
    with pytest.raises(ValueError, match="last_input must have shape"):
        cross_entropy_grad_norm(z, torch.zeros(3, dtype=torch.long), last_input=torch.ones(2, 7))
    with pytest.raises(ValueError, match="targets must have the shape"):
        bce_grad_norm(z, torch.zeros(3, 5))
    with pytest.raises(ValueError, match="floating-point"):
        bce_grad_norm(torch.zeros(3, 4, dtype=torch.long), torch.zeros(3, 4))
    zg = torch.zeros(3, 4, requires_grad=True)
    with pytest.raises(ValueError, match="per_node_loss must have shape"):
        autograd_grad_norm(zg.sum(), zg)
    with pytest.raises(ValueError, match="autograd"):
        autograd_grad_norm(zg.sum(1).detach(), zg)


# ---- ScoreTable ------------------------------------------------------------------------


def small_graph(n=6):
    return dgl.graph((torch.arange(n - 1), torch.arange(1, n)), num_nodes=n)


def test_table_is_node_data_in_shared_memory():
    g = small_graph()
    table = ScoreTable(g, initial=2.0)
    assert g.ndata["mvs_score"] is table.values
    assert table.values.dtype == torch.float32 and table.values.is_shared()
    assert g.ndata["mvs_score_written"].dtype == torch.bool
    assert g.ndata["mvs_score_written"].is_shared()
    torch.testing.assert_close(table.read(), torch.full((6,), 2.0))  # before writes: uniform
    assert not bool(table.written().any())


def test_read_gives_unscored_nodes_the_largest_written_score():
    g = small_graph()
    table = ScoreTable(g)
    table.write(torch.tensor([1, 4]), torch.tensor([0.5, 3.0]))
    torch.testing.assert_close(table.read(torch.tensor([0, 1, 2, 4])),
                               torch.tensor([3.0, 0.5, 3.0, 3.0]))
    # "Largest among the queried nodes": without node 4 the fill is 0.5.
    torch.testing.assert_close(table.read(torch.tensor([0, 1])), torch.tensor([0.5, 0.5]))
    # None of the queried nodes written: the initial value.
    torch.testing.assert_close(table.read(torch.tensor([2, 3])), torch.tensor([1.0, 1.0]))
    assert table.written(torch.tensor([1, 2])).tolist() == [True, False]
    assert table.read(torch.tensor([], dtype=torch.long)).numel() == 0


def test_write_is_in_place():
    g = small_graph()
    table = ScoreTable(g)
    ptr = table.values.data_ptr()
    table.write(torch.tensor([0, 5]), torch.tensor([4.0, 0.0], dtype=torch.float64))
    assert table.values.data_ptr() == ptr and g.ndata["mvs_score"].data_ptr() == ptr
    assert g.ndata["mvs_score"][[0, 5]].tolist() == [4.0, 0.0]


@pytest.mark.parametrize(
    "nodes, scores, match",
    [
        (torch.tensor([0, 1]), torch.tensor([1.0]), "one value per node"),
        (torch.tensor([0, 1]), torch.tensor([1.0, float("nan")]), "finite and non-negative"),
        (torch.tensor([0, 1]), torch.tensor([1.0, float("inf")]), "finite and non-negative"),
        (torch.tensor([0, 1]), torch.tensor([1.0, -1.0]), "finite and non-negative"),
        (torch.tensor([0, 6]), torch.tensor([1.0, 1.0]), r"node ids must lie in \[0, 6\)"),
        (torch.tensor([-1, 2]), torch.tensor([1.0, 1.0]), r"node ids must lie in \[0, 6\)"),
        (torch.tensor([[0, 1]]), torch.tensor([[1.0, 1.0]]), "1-D integer"),
        (torch.tensor([0.0, 1.0]), torch.tensor([1.0, 1.0]), "1-D integer"),
        (torch.tensor([0, 1]), torch.ones(2, 1), "one value per node"),
    ],
)
def test_failed_write_changes_nothing(nodes, scores, match):
    g = small_graph()
    table = ScoreTable(g)
    table.write(torch.tensor([3]), torch.tensor([7.0]))
    before = (table.values.clone(), table.written().clone())
    with pytest.raises(ValueError, match=match):
        table.write(nodes, scores)
    assert torch.equal(table.values, before[0]) and torch.equal(table.written(), before[1])


def test_reattach_and_state_dict():
    g = small_graph()
    table = ScoreTable(g, key="s")
    table.write(torch.tensor([2]), torch.tensor([5.0]))
    again = ScoreTable(g, key="s")
    assert again.values.data_ptr() == table.values.data_ptr()
    assert again.read(torch.tensor([2, 3])).tolist() == [5.0, 5.0]

    state = table.state_dict()
    table.write(torch.tensor([2, 3]), torch.tensor([1.0, 1.0]))
    ptr = table.values.data_ptr()
    table.load_state_dict(state)
    assert table.values.data_ptr() == ptr and table.values.is_shared()
    assert table.written().tolist() == [False, False, True, False, False, False]
    assert table.values[2].item() == 5.0

    other = ScoreTable(small_graph(7))
    with pytest.raises(ValueError, match="state has 6 nodes, the table has 7"):
        other.load_state_dict(state)


def test_a_fresh_table_starts_unwritten_and_leaves_the_old_one_alone():
    g = small_graph()
    table = ScoreTable(g, key="s")
    table.write(torch.tensor([2]), torch.tensor([5.0]))
    fresh = ScoreTable(g, key="s", fresh=True)
    assert fresh.values.data_ptr() != table.values.data_ptr() and fresh.values.is_shared()
    assert not bool(fresh.written().any()) and g.ndata["s"] is fresh.values
    assert table.read(torch.tensor([2])).item() == 5.0  # the old table keeps its scores
    g.ndata["t"] = torch.zeros(6, dtype=torch.int64)  # not a score table: never replaced
    with pytest.raises(ValueError, match="not a float32 .6,. score table; pass another key"):
        ScoreTable(g, key="t", fresh=True)


def test_existing_user_scores_count_as_written():
    g = small_graph(3)
    g.ndata["mvs_score"] = torch.tensor([1.0, 2.0, 3.0])
    table = ScoreTable(g)
    assert table.read().tolist() == [1.0, 2.0, 3.0]


def test_table_errors():
    with pytest.raises(ValueError, match="homogeneous"):
        ScoreTable(dgl.heterograph({("a", "r", "b"): ([0], [1])}))
    with pytest.raises(ValueError, match="DGLGraph"):
        ScoreTable(torch.zeros(3))
    with pytest.raises(ValueError, match="initial"):
        ScoreTable(small_graph(), initial=0.0)
    g = small_graph()
    g.ndata["mvs_score"] = torch.zeros(6, 2)
    with pytest.raises(ValueError, match="pass another key"):
        ScoreTable(g)


def _child(table, parent_wrote, child_read, results):
    results.put(("before_fork", table.read(torch.tensor([0, 1])).tolist()))
    parent_wrote.wait(30)
    results.put(("after_fork", table.read(torch.tensor([2, 3])).tolist(),
                 table.written(torch.tensor([2, 3])).tolist()))
    table.write(torch.tensor([5]), torch.tensor([9.0]))
    child_read.set()


def test_writes_cross_a_fork_both_ways():
    ctx = mp.get_context("fork")
    g = small_graph()
    table = ScoreTable(g)
    table.write(torch.tensor([0, 1]), torch.tensor([1.5, 2.5]))
    parent_wrote, child_read, results = ctx.Event(), ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=_child, args=(table, parent_wrote, child_read, results))
    proc.start()
    try:
        assert results.get(timeout=30) == ("before_fork", [1.5, 2.5])
        table.write(torch.tensor([2, 3]), torch.tensor([4.0, 6.0]))  # after the fork
        parent_wrote.set()
        assert results.get(timeout=30) == ("after_fork", [4.0, 6.0], [True, True])
        assert child_read.wait(30)
        assert table.values[5].item() == 9.0  # the child's write reached the parent
    finally:
        proc.join(30)
    assert proc.exitcode == 0


class _ReadScoresSampler(dgl.dataloading.Sampler):
    """A sampler that only reads the score table, as an MVS sampler in a worker would."""

    def __init__(self, key):
        super().__init__()
        self.key = key

    def sample(self, g, seeds):
        return g.ndata[self.key][seeds].clone()


def test_dataloader_workers_see_later_writes():
    g = small_graph(8)
    table = ScoreTable(g)
    loader = dgl.dataloading.DataLoader(
        g, torch.arange(8), _ReadScoresSampler("mvs_score"), batch_size=8,
        num_workers=1, persistent_workers=True)
    first = next(iter(loader))
    assert first.tolist() == [1.0] * 8
    table.write(torch.arange(8), torch.arange(8, dtype=torch.float32))  # workers already up
    second = next(iter(loader))
    assert second.tolist() == list(range(8))
