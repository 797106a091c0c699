"""Dropout-aware control variates (VR-GCN's CVD) in stock models: exact, unbiased, and with the
dropout noise of the exact layer instead of ``d / s`` times it.

References are DGL's own full-graph forward of the same modules (``model([g] * L, x)``) and the
exact one-hop blocks (every in-edge), run in training mode with the same dropout.
"""
import io
import pickle

import dgl
import pytest
import torch
import torch.nn.functional as F
from dgl.nn import GINConv, GraphConv, SAGEConv
from torch import nn

import dgl_mvs
from conftest import random_graph
from dgl_mvs.dropout import dropout_hook, dropout_input, has_dropout_hook
from dgl_mvs.onehop import onehop_hook

TOL = 1e-5
FEATS = dict(prefetch_node_feats=["feat"])

# The layer above the first: aggregation-only GraphConv makes the output the aggregate itself.
TOP = {
    "sage": lambda: SAGEConv(16, 5, "mean"),
    "mean": lambda: GraphConv(16, 16, norm="right", weight=False, bias=False,
                              allow_zero_in_degree=True),
    "sum": lambda: GraphConv(16, 16, norm="none", weight=False, bias=False,
                             allow_zero_in_degree=True),
    "both": lambda: GraphConv(16, 16, norm="both", weight=False, bias=False,
                              allow_zero_in_degree=True),
    "weighted": lambda: GraphConv(16, 16, norm="none", weight=False, bias=False,
                                  allow_zero_in_degree=True),
    "gin": lambda: GINConv(nn.Linear(16, 5), "sum"),
}


class Net(nn.Module):
    """DGL's example forward: ``h = dropout(relu(layer(block, h)))`` between layers."""

    def __init__(self, top="sage", p=0.5, functional=False, num_layers=2):
        super().__init__()
        middle = [SAGEConv(16, 16, "mean") for _ in range(num_layers - 2)]
        self.layers = nn.ModuleList([SAGEConv(12, 16, "mean"), *middle, TOP[top]()])
        self.weighted = top == "weighted"
        self.functional, self.p = functional, p
        self.dropout = nn.Dropout(p)

    def forward(self, blocks, x):
        h = x
        for i, (layer, block) in enumerate(zip(self.layers, blocks)):
            if self.weighted:
                h = layer(block, h, edge_weight=block.edata["edge_weights"])
            else:
                h = layer(block, h)
            if i != len(self.layers) - 1:
                h = F.relu(h)
                h = F.dropout(h, self.p, self.training) if self.functional else self.dropout(h)
        return h


@pytest.fixture(autouse=True)
def one_thread():
    """Thousands of tiny forwards: one thread, or a busy machine's thread pool dominates."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _graph(top, num_nodes=300, num_edges=6000):
    g = random_graph(num_nodes, num_edges)  # mean in-degree about 20
    if top == "weighted":
        g.edata["w"] = dgl_mvs.gcn_norm(g)
        g.edata["edge_weights"] = g.edata["w"]
    return g


def _sampler(g, model, fanouts, top):
    return dgl_mvs.OneHopSampler(g, model, fanouts, edge_weight="w" if top == "weighted" else None,
                                 **FEATS)


def _run(model, blocks):
    with torch.no_grad():
        return model(blocks, blocks[0].srcdata["feat"])


def _blocks(sampler, g, seeds, draw):
    return sampler.blocks(g, seeds, generator=torch.Generator().manual_seed(draw))[2]


# ------------------------------------------------------------ (a) exactness unchanged
@pytest.mark.parametrize("num_layers", [2, 3])
@pytest.mark.parametrize("top", ["sage", "both", "weighted", "gin"])
def test_fresh_snapshot_is_exact_in_eval_mode_and_without_dropout(top, num_layers):
    torch.manual_seed(0)
    g = _graph(top)
    seeds = torch.randperm(g.num_nodes())[:60]
    for p, train in ((0.5, False), (0.0, True)):  # dropout off, or on at rate 0
        model = Net(top, p=p, num_layers=num_layers).train(train)
        sampler = _sampler(g, model, [-1] + [2] * (num_layers - 1), top)
        assert has_dropout_hook(model.dropout)
        full = _run(model, [g] * num_layers)
        out = _run(model, _blocks(sampler, g, seeds, 1))
        torch.testing.assert_close(out, full[seeds], atol=TOL, rtol=0)
        sampler.detach()


# ------------------------------------------------------------ (b), (d) unbiased
@pytest.mark.parametrize("functional", [False, True])
@pytest.mark.parametrize("top", ["sage", "sum", "weighted"])
def test_unbiased_over_draws_and_dropout_masks(top, functional):
    """A stale snapshot, dropout 0.5 in training mode: the mean over neighbour draws and
    dropout masks is the exact layer's expectation, i.e. DGL's full-graph eval forward (the
    last layer is linear in its input, and E[dropout(mu)] = mu).  Functional dropout is not
    tagged: it falls back to plain control variates, unbiased as well."""
    torch.manual_seed(0)
    g = _graph(top)
    model = Net(top, functional=functional)
    sampler = _sampler(g, model, [-1, 2], top)
    with torch.no_grad():  # new weights: the snapshot (taken at the old ones) is stale
        for p in model.layers[0].parameters():
            p.add_(0.3 * torch.randn_like(p))
    expected = _run(model.eval(), [g, g])
    model.train()
    seeds = torch.arange(40)
    outs = torch.stack([_run(model, _blocks(sampler, g, seeds, draw)) for draw in range(400)])
    mean, sem = outs.mean(0), outs.std(0) / outs.shape[0] ** 0.5
    z = ((mean - expected[seeds]) / sem.clamp(min=1e-6)).abs()
    assert z.max() < 5.5, z.max()
    assert (outs.std(0) > 1e-3).any()  # not vacuous: one draw is not exact


# ------------------------------------------------------------ (c) the dropout variance
def _dropout_variance(model, blocks, masks):
    """Per destination: the variance over dropout masks of the output, summed over features."""
    outs = torch.stack([_run(model, blocks) for _ in range(masks)])
    return outs.var(0).sum(1)


@pytest.mark.parametrize("top", ["mean", "sum", "both", "weighted"])
def test_dropout_variance_is_the_exact_layers(top):
    """Given the neighbour draw, the variance that the dropout masks add to the aggregate is
    the exact layer's (times ``1 + (s - 1) / d`` for draws with replacement), not ``d / s``
    times it as with plain control variates (``functional`` dropout here)."""
    torch.manual_seed(0)
    g = _graph(top)
    cvd = Net(top).train()
    plain = Net(top, functional=True).train()
    plain.load_state_dict(cvd.state_dict())
    exact_sampler = _sampler(g, cvd, [-1, -1], top)
    cvd_sampler = _sampler(g, cvd, [-1, 2], top)
    plain_sampler = _sampler(g, plain, [-1, 2], top)
    degree = g.in_degrees().float()
    seeds = torch.nonzero(degree >= 8).squeeze(1)[:40]
    d = degree[seeds]
    exact = _dropout_variance(cvd, _blocks(exact_sampler, g, seeds, 0), 400)
    draws = 25
    ours = sum(_dropout_variance(cvd, _blocks(cvd_sampler, g, seeds, k), 24)
               for k in range(draws)) / draws
    theirs = sum(_dropout_variance(plain, _blocks(plain_sampler, g, seeds, k), 24)
                 for k in range(draws)) / draws
    ratio = d / 2  # d_v / s_v
    expected = (exact * (1 + 1 / d)).sum()  # with replacement: 1 + (s - 1) / d
    assert 0.8 < ours.sum() / expected < 1.25, (ours.sum() / expected)
    # Plain control variates: d_v / s_v (about 10 here) times that.
    scaled = (ratio * ours).sum() / ours.sum()
    assert scaled > 8
    assert 0.75 < theirs.sum() / (ratio * ours).sum() < 1.33, theirs.sum() / (ratio * ours).sum()


# ------------------------------------------------------------ the tag
def test_dropout_input_is_found_only_for_the_unchanged_dropout_output():
    drop = nn.Dropout(0.5)
    drop.register_forward_hook(dropout_hook, with_kwargs=True)
    mu = torch.randn(6, 4)
    h = drop(mu)
    assert dropout_input(h) is mu
    assert dropout_input(drop(input=mu)) is mu
    assert dropout_input(h * 1.0) is None  # computed from it: not the dropout's output
    assert dropout_input(F.dropout(mu, 0.5)) is None  # functional dropout: not tagged
    h.add_(1.0)  # changed in place after the dropout
    assert dropout_input(h) is None
    h2 = drop(mu)
    mu.mul_(2.0)  # its input changed in place
    assert dropout_input(h2) is None
    assert dropout_input(drop.eval()(mu)) is None  # eval mode: mu = h, nothing to split
    inplace = nn.Dropout(0.5, inplace=True).train()
    inplace.register_forward_hook(dropout_hook, with_kwargs=True)
    assert dropout_input(inplace(torch.randn(6, 4))) is None  # the input is overwritten


# ------------------------------------------------------------ (e) owned hooks
def _post(module):
    return [h for h in module._forward_hooks.values() if getattr(h, "_dgl_mvs_hook", False)]


def test_dropout_hooks_are_installed_once_owned_removable_and_pickle():
    torch.manual_seed(0)
    g = _graph("sage")
    model = Net("sage")
    assert not _post(model.dropout)
    exact = dgl_mvs.OneHopSampler(g, model, [-1, -1], **FEATS)
    assert not _post(model.dropout)  # exact layers read no dropout input
    first = dgl_mvs.OneHopSampler(g, model, [-1, 2], **FEATS)
    second = dgl_mvs.OneHopSampler(g, model, [-1, 2], **FEATS)
    assert _post(model.dropout) == [dropout_hook]  # once, whatever the number of samplers
    second.detach()
    assert _post(model.dropout) == [dropout_hook]  # `first` still uses it
    first.detach()
    assert not _post(model.dropout)
    first.attach()
    assert _post(model.dropout) == [dropout_hook]
    # Pickles by reference with the model; the copy's hook tags its own dropout's output.
    for copy in (pickle.loads(pickle.dumps(model)),
                 torch.load(io.BytesIO(_saved(model)), weights_only=False)):
        assert _post(copy.dropout) == [dropout_hook]
        assert dropout_input(copy.dropout.train()(torch.ones(3, 2))) is not None
    # remove_hooks counts and removes it; the sampler then refuses until attach().
    assert dgl_mvs.remove_hooks(model) == 3  # two layer pre-hooks, one dropout hook
    assert not _post(model.dropout) and not model.layers[1]._forward_pre_hooks
    with pytest.raises(RuntimeError, match=r"remove_hooks.*call sampler.attach\(\)"):
        first.blocks(g, torch.arange(4))
    first.attach()
    first.blocks(g, torch.arange(4))
    # The dropout's hook alone removed: refused as well, never a silent plain estimator.
    from dgl_mvs.dropout import remove_dropout_hook
    remove_dropout_hook(model.dropout)
    with pytest.raises(RuntimeError, match=r"nn.Dropout.*remove_hooks.*sampler.attach\(\)"):
        first.blocks(g, torch.arange(4))
    first.attach()
    assert model.layers[0]._forward_pre_hooks and list(
        model.layers[0]._forward_pre_hooks.values()) == [onehop_hook]
    exact.detach()
    first.detach()


def _saved(model):
    buffer = io.BytesIO()
    torch.save(model, buffer)
    return buffer.getvalue()


# ------------------------------------------------------------ the block
def test_control_variate_block_has_one_estimate_row_per_destination():
    """The layer sees ``[own rows, estimate rows]`` with one edge each, whatever ``s``: its
    own weights run on 2 B rows, not on one row per drawn edge."""
    torch.manual_seed(0)
    g = _graph("sage")
    model = Net("sage")
    sampler = dgl_mvs.OneHopSampler(g, model, [-1, 8], **FEATS)
    seeds = torch.arange(50)
    _, _, blocks = sampler.blocks(g, seeds, generator=torch.Generator().manual_seed(0))
    top = blocks[-1]
    assert top.num_src_nodes() == 2 * seeds.numel() and top.num_edges() == seeds.numel()
    assert bool((top.in_degrees() == 1).all())
    count = top.dstdata[dgl_mvs.keys.DRAWN_COUNT]
    assert torch.equal(count, g.in_degrees(seeds).clamp(max=8))
    # The layer below computes the seeds and their distinct drawn neighbours, seeds first.
    below = blocks[0].dstdata[dgl.NID]
    assert torch.equal(below[:50], seeds)
    drawn = top.dstdata[dgl_mvs.keys.DRAWN]
    taken = torch.arange(drawn.shape[1]) < count[:, None]
    u, v = g.in_edges(seeds)
    for i in range(0, 50, 7):  # every drawn row is an in-neighbour of its destination
        assert set(below[drawn[i][taken[i]]].tolist()) <= set(u[v == seeds[i]].tolist())


def test_draws_take_every_edge_up_to_s_and_are_uniform_above():
    hub = dgl.graph((torch.arange(1, 11), torch.zeros(10, dtype=torch.int64)), num_nodes=11)
    hub = dgl.add_edges(hub, torch.tensor([0, 2]), torch.tensor([1, 1]))  # node 1: 2 in-edges
    position, src, _, count = dgl_mvs.onehop._draw_in_edges(hub, torch.tensor([1, 0]), 3, None)
    assert count.tolist() == [2, 3]
    assert sorted(src[position == 0].tolist()) == [0, 2]  # d <= s: every in-edge, once
    gen = torch.Generator().manual_seed(0)
    seen = torch.zeros(11)
    trials = 3000
    for _ in range(trials):
        position, src, _, _ = dgl_mvs.onehop._draw_in_edges(hub, torch.tensor([0]), 3, gen)
        seen += torch.bincount(src, minlength=11).float()
    freq = seen[1:] / (3 * trials)  # with replacement: each neighbour 1/10 of the draws
    assert (freq - 0.1).abs().max() < 5 * (0.1 * 0.9 / (3 * trials)) ** 0.5


@pytest.mark.parametrize("num_layers", [2, 3])
def test_destinations_without_in_edges_stay_finite_under_dropout(num_layers):
    """A destination with no in-edge has no draws: its estimate is zero, not NaN (the CVD
    noise factor is ``sqrt(s_v / d_v)`` = 0 there, never ``1 / sqrt(0)``)."""
    torch.manual_seed(0)
    g = dgl.add_nodes(_graph("sage"), 6)
    g.ndata["feat"][-6:] = torch.randn(6, 12)
    lonely = torch.arange(g.num_nodes() - 6, g.num_nodes())
    seeds = torch.cat([lonely, torch.arange(30)])
    model = Net("sage", num_layers=num_layers)
    sampler = _sampler(g, model, [-1] + [2] * (num_layers - 1), "sage")
    out = model.train()(_blocks(sampler, g, seeds, 0), _blocks(sampler, g, seeds, 0)[0]
                        .srcdata["feat"])
    assert bool(torch.isfinite(out).all())
    model.eval()
    torch.testing.assert_close(_run(model, _blocks(sampler, g, seeds, 1)),
                               _run(model, [g] * num_layers)[seeds], atol=TOL, rtol=0)
