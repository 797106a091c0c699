"""One-hop blocks over a precomputed first layer: exact against DGL's full-graph forward.

The reference is the same stock ``dgl.nn`` modules run on the whole graph
(``model([g] * L, x)``): plain DGL message passing, which the sampler's hooks leave alone.
"""
import dgl
import pytest
import torch
import torch.nn.functional as F
from dgl.nn import GATConv, GINConv, GraphConv, SAGEConv
from torch import nn

import dgl_mvs
from conftest import random_graph
from dgl_mvs.aggregation import Aggregation, aggregate, aggregation_of

TOL = 1e-5
NID = dgl.NID

LAYERS = {
    "sage": lambda a, b: SAGEConv(a, b, "mean"),
    "sage_gcn": lambda a, b: SAGEConv(a, b, "gcn"),
    "gcn_right": lambda a, b: GraphConv(a, b, norm="right", allow_zero_in_degree=True),
    "gcn_both": lambda a, b: GraphConv(a, b, norm="both", allow_zero_in_degree=True),
    "gcn_left": lambda a, b: GraphConv(a, b, norm="left", allow_zero_in_degree=True),
    "gcn_weighted": lambda a, b: GraphConv(a, b, norm="none", allow_zero_in_degree=True),
    "gin_sum": lambda a, b: GINConv(nn.Linear(a, b), "sum"),
    "gin_mean": lambda a, b: GINConv(nn.Linear(a, b), "mean", learn_eps=True),
}


class Model(nn.Module):
    """model(blocks, x) as DGL's examples write it, over stock layers."""

    def __init__(self, kind, num_layers, in_feats=12, hidden=16, out=5, dropout=0.0):
        super().__init__()
        dims = [in_feats] + [hidden] * (num_layers - 1) + [out]
        self.layers = nn.ModuleList([LAYERS[kind](a, b) for a, b in zip(dims[:-1], dims[1:])])
        self.weighted = kind == "gcn_weighted"
        self.dropout = nn.Dropout(dropout)

    def forward(self, blocks, x):
        h = x
        for i, (layer, block) in enumerate(zip(self.layers, blocks)):
            if self.weighted:
                h = layer(block, h, edge_weight=block.edata["edge_weights"])
            else:
                h = layer(block, h)
            if i != len(self.layers) - 1:
                h = self.dropout(F.relu(h))
        return h


def _setup(kind, num_layers, idtype, fanouts=None):
    torch.manual_seed(0)
    g = random_graph(idtype=idtype)
    weight = None
    if kind == "gcn_weighted":
        g.edata["w"] = dgl_mvs.gcn_norm(g)
        g.edata["edge_weights"] = g.edata["w"]
        weight = "w"
    model = Model(kind, num_layers).eval()
    with torch.no_grad():
        full = model([g] * num_layers, g.ndata["feat"])
    sampler = dgl_mvs.OneHopSampler(g, model, fanouts, edge_weight=weight,
                                    prefetch_node_feats=["feat"])
    return g, model, sampler, full


def _forward(model, sampler, g, seeds, generator=None):
    _, out_nodes, blocks = sampler.blocks(g, seeds, generator=generator)
    with torch.no_grad():
        return out_nodes, model(blocks, blocks[0].srcdata["feat"])


@pytest.mark.parametrize("idtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("kind", list(LAYERS))
def test_exact_blocks_match_full_graph(kind, num_layers, idtype):
    g, model, sampler, full = _setup(kind, num_layers, idtype, [-1] * num_layers)
    seeds = torch.randperm(g.num_nodes())[:60].to(idtype)
    out_nodes, out = _forward(model, sampler, g, seeds)
    assert torch.equal(out_nodes, seeds)
    torch.testing.assert_close(out, full[seeds.long()], atol=TOL, rtol=0)


@pytest.mark.parametrize("idtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("num_layers", [2, 3])
@pytest.mark.parametrize("kind", [k for k in LAYERS if k != "sage_gcn"])
def test_control_variates_with_a_fresh_snapshot_match_full_graph(kind, num_layers, idtype):
    """With the snapshot refreshed at the current weights the estimate is exact."""
    g, model, sampler, full = _setup(kind, num_layers, idtype, [-1] + [2] * (num_layers - 1))
    assert sampler.refreshed == 1  # built at construction
    seeds = torch.randperm(g.num_nodes())[:60].to(idtype)
    _, out = _forward(model, sampler, g, seeds, torch.Generator().manual_seed(1))
    torch.testing.assert_close(out, full[seeds.long()], atol=TOL, rtol=0)


def test_control_variates_are_unbiased_with_a_stale_snapshot():
    """The last layer is linear in its input: its estimate averages to the exact output."""
    g, model, sampler, _ = _setup("sage", 2, torch.int64, [-1, 2])
    with torch.no_grad():  # new weights: the snapshot (taken at the old ones) is stale
        for p in model.layers[0].parameters():
            p.add_(0.3 * torch.randn_like(p))
        full = model([g, g], g.ndata["feat"])
    seeds = torch.arange(40)
    outs = torch.stack([
        _forward(model, sampler, g, seeds, torch.Generator().manual_seed(s))[1]
        for s in range(400)
    ])
    mean, sem = outs.mean(0), outs.std(0) / outs.shape[0] ** 0.5
    z = ((mean - full[seeds]) / sem.clamp(min=1e-6)).abs()
    assert z.max() < 5.5, z.max()
    assert (outs.std(0) > 1e-3).any()  # a single draw is not exact: the test is not vacuous


def test_first_block_reads_aggregates_not_neighbours():
    g, model, sampler, _ = _setup("sage", 2, torch.int64, [-1, -1])
    input_nodes, _, blocks = sampler.blocks(g, torch.arange(10))
    first = blocks[0]
    num = first.num_dst_nodes()
    assert first.num_edges() == num and first.num_src_nodes() == 2 * num
    # Aggregate rows are numbered num_nodes + v: indexing g.ndata with them fails loudly.
    assert torch.equal(input_nodes[num:], first.dstdata[NID] + g.num_nodes())
    with pytest.raises(IndexError):
        g.ndata["feat"][input_nodes]
    expected = aggregate(g, g.ndata["feat"], "mean")[first.dstdata[NID]]
    torch.testing.assert_close(first.srcdata["feat"][num:], expected)


def test_changed_features_are_reaggregated():
    g, model, sampler, _ = _setup("sage", 2, torch.int64, [-1, -1])
    seeds = torch.arange(30)
    g.ndata["feat"][:200] *= 3.0  # in place
    with torch.no_grad():
        full = model([g, g], g.ndata["feat"])
    torch.testing.assert_close(_forward(model, sampler, g, seeds)[1], full[seeds], atol=TOL,
                               rtol=0)
    g.ndata["feat"] = torch.randn_like(g.ndata["feat"])  # replaced
    with torch.no_grad():
        full = model([g, g], g.ndata["feat"])
    torch.testing.assert_close(_forward(model, sampler, g, seeds)[1], full[seeds], atol=TOL,
                               rtol=0)


def test_keyword_calls_go_through_the_hooks():
    """GraphConv(norm='both') needs the hook's rescaling even when called with keywords."""
    torch.manual_seed(0)
    g = random_graph()
    layers = nn.ModuleList([GraphConv(12, 16, allow_zero_in_degree=True),
                            GraphConv(16, 5, allow_zero_in_degree=True)])

    def model(blocks, x):
        h = F.relu(layers[0](graph=blocks[0], feat=x))
        return layers[1](graph=blocks[1], feat=h)

    sampler = dgl_mvs.OneHopSampler(g, layers, prefetch_node_feats=["feat"])
    seeds = torch.arange(50)
    _, _, blocks = sampler.blocks(g, seeds)
    with torch.no_grad():
        torch.testing.assert_close(model(blocks, blocks[0].srcdata["feat"]),
                                   model([g, g], g.ndata["feat"])[seeds], atol=TOL, rtol=0)


def test_aggregations_read_off_layers_and_clear_errors():
    assert aggregation_of(SAGEConv(4, 4, "mean")) == Aggregation("mean", True)
    assert aggregation_of(GraphConv(4, 4, norm="right")).kind == "mean"
    assert aggregation_of(GraphConv(4, 4, norm="none")).kind == "sum"
    assert not aggregation_of(GraphConv(4, 4)).exact_on_blocks  # 'both' reads block degrees
    for layer in (GATConv(4, 4, 1), SAGEConv(4, 4, "pool"), SAGEConv(4, 4, "lstm"),
                  GINConv(nn.Linear(4, 4), "max")):
        with pytest.raises(ValueError, match="history"):
            aggregation_of(layer)
    with pytest.raises(ValueError, match="cannot tell how Linear aggregates"):
        aggregation_of(nn.Linear(4, 4))
    with pytest.raises(ValueError, match="unknown aggregation"):
        Aggregation("median")


def test_sampler_errors(graph):
    model = Model("sage", 2)
    with pytest.raises(ValueError, match="prefetch_node_feats"):
        dgl_mvs.OneHopSampler(graph, model)
    with pytest.raises(KeyError, match="'nope' is not in g.ndata"):
        dgl_mvs.OneHopSampler(graph, model, prefetch_node_feats=["nope"])
    graph.ndata["ids"] = torch.arange(graph.num_nodes())
    with pytest.raises(ValueError, match="floating-point"):
        dgl_mvs.OneHopSampler(graph, model, prefetch_node_feats=["ids"])
    with pytest.raises(ValueError, match="edge features"):
        dgl_mvs.OneHopSampler(graph, model, prefetch_node_feats=["feat"],
                              prefetch_edge_feats=["w"])
    with pytest.raises(ValueError, match="fanouts"):
        dgl_mvs.OneHopSampler(graph, model, [-1, 0], prefetch_node_feats=["feat"])
    with pytest.raises(ValueError, match="model itself"):  # CV needs the module to refresh
        dgl_mvs.OneHopSampler(graph, ["mean", "mean"], [-1, 2], prefetch_node_feats=["feat"])
    with pytest.raises(ValueError, match="not aggregation names"):  # 'both' needs a hook
        dgl_mvs.OneHopSampler(graph, ["both", "both"], [-1, -1], prefetch_node_feats=["feat"])
    with pytest.raises(ValueError, match="GATConv weighs neighbours by attention"):
        dgl_mvs.OneHopSampler(graph, [GATConv(12, 4, 1), GATConv(4, 5, 1)],
                              prefetch_node_feats=["feat"])
    sampler = dgl_mvs.OneHopSampler(graph, model, prefetch_node_feats=["feat"])
    with pytest.raises(ValueError, match="cannot exclude edges"):
        sampler.sample_blocks(graph, torch.arange(4), exclude_eids=torch.tensor([0]))


def test_cost_rule_follows_the_degree():
    sparse = dgl.rand_graph(1000, 10_000)   # mean degree 10: exact
    dense = dgl.rand_graph(1000, 100_000)   # mean degree 100: control variates
    assert dgl_mvs.onehop.default_fanouts(sparse, 2) == [-1, -1]
    assert dgl_mvs.onehop.default_fanouts(dense, 2) == [-1, dgl_mvs.onehop.LAST_CV_FANOUT]
    assert dgl_mvs.onehop.default_fanouts(dense, 3) == [-1, 2, 8]
    assert dgl_mvs.onehop.default_fanouts(sparse, 3)[1] > 0  # middle layers: CV


def test_in_dataloader_with_uniform_seeds_and_workers(graph):
    model = Model("sage", 2)
    sampler = dgl_mvs.OneHopSampler(graph, model, prefetch_node_feats=["feat"],
                                    prefetch_labels=["label"])
    for workers in (0, 2):
        loader = dgl.dataloading.DataLoader(graph, torch.arange(100), sampler, batch_size=16,
                                            shuffle=True, num_workers=workers)
        seen = []
        for input_nodes, output_nodes, blocks in loader:
            out = model(blocks, blocks[0].srcdata["feat"])
            assert out.shape == (output_nodes.numel(), 5)
            assert torch.equal(blocks[-1].dstdata["label"], graph.ndata["label"][output_nodes])
            seen.append(output_nodes)
        assert torch.equal(torch.sort(torch.cat(seen)).values, torch.arange(100))


def test_snapshot_refreshes_on_schedule():
    g = random_graph()
    model = Model("sage", 2)
    sampler = dgl_mvs.OneHopSampler(g, model, [-1, 2], refresh_every=64,
                                    prefetch_node_feats=["feat"])
    loader = dgl.dataloading.DataLoader(g, torch.arange(160), sampler, batch_size=16)
    for _ in loader:
        pass
    assert sampler.refreshed == 1 + 160 // 64  # at construction, then every 64 seeds


def test_docstring_examples_run():
    import doctest

    import dgl_mvs.aggregation
    import dgl_mvs.onehop
    import dgl_mvs.sampler

    for module in (dgl_mvs.onehop, dgl_mvs.sampler, dgl_mvs.aggregation):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted > 0 and result.failed == 0, module.__name__


@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("kind", list(LAYERS))
def test_layerwise_logits_match_full_graph(kind, num_layers):
    """OneHopSampler.logits: layer-wise inference over the precomputed first layer is the
    full-graph forward, in eval mode (dropout on in the model, off in the pass), for any
    subset of nodes, and the model's modes come back as they were."""
    g, model, sampler, _ = _setup(kind, num_layers, torch.int64, [-1] * num_layers)
    model.dropout.p = 0.5
    model.train()
    nodes = torch.randperm(g.num_nodes())[:50]
    out = sampler.logits(model, nodes, chunk_size=37)
    assert model.training and all(m.training for m in model.modules())
    with torch.no_grad():
        full = model.eval()([g] * num_layers, g.ndata["feat"])
    torch.testing.assert_close(out, full[nodes], atol=TOL, rtol=0)


def test_refresh_gives_the_logits_of_its_pass():
    g, model, sampler, full = _setup("sage", 2, torch.int64, [-1, 2])
    nodes = torch.arange(30)
    out = sampler.refresh(logits_of=nodes)
    torch.testing.assert_close(out, full[nodes], atol=TOL, rtol=0)
