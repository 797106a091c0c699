"""Nothing silent on the default path (issue "trust"): hooks, the first layer's input, changed
features, edges and graphs, spawned workers, where layers are found.

Exactness is checked against DGL's own full-graph forward of the same modules
(``model([g] * L, x)``), which dgl_mvs's hooks leave alone.
"""
import io
import pickle
import warnings

import dgl
import pytest
import torch
import torch.nn.functional as F
from dgl.nn import GATConv, GraphConv, SAGEConv
from torch import nn

import dgl_mvs
from conftest import random_graph
from dgl_mvs.hooks import is_dgl_mvs_hook, pre_hooks
from dgl_mvs.onehop import onehop_hook
from test_onehop import LAYERS, Model

TOL = 1e-5
FEATS = dict(prefetch_node_feats=["feat"], prefetch_labels=["label"])


def _full(model, g, num_layers):
    with torch.no_grad():
        return model([g] * num_layers, g.ndata["feat"])


def _out(model, sampler, g, seeds, generator=None):
    _, _, blocks = sampler.blocks(g, seeds, generator=generator)
    with torch.no_grad():
        return model(blocks, blocks[0].srcdata["feat"])


def _ours(module):
    return [h for h in pre_hooks(module) if is_dgl_mvs_hook(h)]


class Stack(nn.Module):
    """model(blocks, x) over any list of layers, called in order (tied layers repeat)."""

    def __init__(self, layers):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, blocks, x):
        h = x
        for i, (layer, block) in enumerate(zip(self.layers, blocks)):
            h = layer(block, h)
            if i != len(self.layers) - 1:
                h = F.relu(h)
        return h


# ---------------------------------------------------------------- 1. hooks that stack
@pytest.mark.parametrize("fanouts", [[-1, -1], [-1, 2]])
def test_two_samplers_and_a_rerun_cell_install_one_hook(fanouts):
    """A validation OneHopSampler next to MVSSampler, and a sampler built twice: one hook."""
    torch.manual_seed(0)
    g = random_graph()
    model = Model("gcn_both", 2).eval()
    full = _full(model, g, 2)
    mvs = dgl_mvs.MVSSampler(g, torch.arange(200), 16, model=model, fanouts=fanouts, **FEATS)
    val = dgl_mvs.OneHopSampler(g, model, fanouts, **FEATS)
    val = dgl_mvs.OneHopSampler(g, model, fanouts, **FEATS)  # the cell, run again
    for layer in model.layers:
        assert _ours(layer) == [onehop_hook]
    seeds = torch.arange(60)
    for sampler in (val, mvs.block_sampler):
        out = _out(model, sampler, g, seeds, torch.Generator().manual_seed(1))
        torch.testing.assert_close(out, full[seeds], atol=TOL, rtol=0)


@pytest.mark.parametrize("kind", ["gcn_both", "sage", "gin_sum"])
@pytest.mark.parametrize("fanouts", [[-1, -1, -1], [-1, 2, 2]])
def test_tied_layers_are_exact(kind, fanouts):
    """A 3-layer model whose last two layers are one module (weight tying)."""
    torch.manual_seed(0)
    g = random_graph()
    tied = LAYERS[kind](16, 16)
    model = Stack([LAYERS[kind](12, 16), tied, tied]).eval()
    full = _full(model, g, 3)
    sampler = dgl_mvs.OneHopSampler(g, model, fanouts, **FEATS)
    assert _ours(tied) == [onehop_hook]
    seeds = torch.randperm(g.num_nodes())[:60]
    out = _out(model, sampler, g, seeds, torch.Generator().manual_seed(2))
    torch.testing.assert_close(out, full[seeds], atol=TOL, rtol=0)


@pytest.mark.parametrize("kind", ["gcn_both", "gcn_left"])
def test_a_refresh_in_chunks_is_exact_below_a_layer_that_reads_source_degrees(kind):
    """The snapshot of layer 2 comes from layer 1 on chunk blocks: rescaled like any block."""
    torch.manual_seed(0)
    g = random_graph()
    model = Model(kind, 3).eval()
    sampler = dgl_mvs.OneHopSampler(g, model, [-1, 2, 2], **FEATS)
    sampler.refresh(chunk_size=97)  # chunks smaller than the graph
    seeds = torch.arange(60)
    out = _out(model, sampler, g, seeds, torch.Generator().manual_seed(1))
    torch.testing.assert_close(out, _full(model, g, 3)[seeds], atol=TOL, rtol=0)


def test_hooked_model_pickles_and_the_copy_computes_exactly():
    torch.manual_seed(0)
    g = random_graph()
    model = Model("gcn_both", 2).eval()
    sampler = dgl_mvs.OneHopSampler(g, model, [-1, 2], **FEATS)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer)
    copied = pickle.loads(pickle.dumps(model))
    seeds = torch.arange(50)
    _, _, blocks = sampler.blocks(g, seeds, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = model(blocks, blocks[0].srcdata["feat"])
        for other in (loaded, copied):
            assert _ours(other.layers[0]) == [onehop_hook]
            torch.testing.assert_close(other(blocks, blocks[0].srcdata["feat"]), expected,
                                       atol=0, rtol=0)
            torch.testing.assert_close(_full(other, g, 2), _full(model, g, 2), atol=0, rtol=0)
    torch.testing.assert_close(expected, _full(model, g, 2)[seeds], atol=TOL, rtol=0)


def test_detach_context_manager_and_remove_hooks():
    torch.manual_seed(0)
    g = random_graph()
    model = Model("gcn_both", 2).eval()
    keep = dgl_mvs.OneHopSampler(g, model, **FEATS)
    with dgl_mvs.OneHopSampler(g, model, **FEATS) as other:
        other.blocks(g, torch.arange(4))
    # `keep` still uses the layers: their hooks stay, its blocks stay exact.
    assert all(_ours(layer) == [onehop_hook] for layer in model.layers)
    with pytest.raises(RuntimeError, match=r"detached \(sampler.detach\(\)\); call "
                                           r"sampler.attach\(\)"):
        other.blocks(g, torch.arange(4))
    keep.detach()
    assert not any(_ours(layer) for layer in model.layers)
    keep.attach()
    torch.testing.assert_close(_out(model, keep, g, torch.arange(40)),
                               _full(model, g, 2)[:40], atol=TOL, rtol=0)
    assert dgl_mvs.remove_hooks(model) == 2
    assert not any(_ours(layer) for layer in model.layers)
    with pytest.raises(RuntimeError, match=r"remove_hooks.*call sampler.attach\(\)"):
        keep.blocks(g, torch.arange(4))
    keep.attach()
    torch.testing.assert_close(_out(model, keep, g, torch.arange(40)),
                               _full(model, g, 2)[:40], atol=TOL, rtol=0)


def test_a_second_history_replaces_the_first_and_models_with_histories_pickle():
    torch.manual_seed(0)
    g = random_graph()
    model = Model("sage", 2).eval()
    full = _full(model, g, 2)
    first = dgl_mvs.History(g, [16])
    first.attach(model.layers)
    second = dgl_mvs.History(g, [16])
    with pytest.warns(RuntimeWarning, match=r"another dgl_mvs.History attached.*"
                                            r"old_history.detach\(\)"):
        second.attach(model.layers)
    assert all(len(_ours(layer)) == 1 for layer in model.layers)
    assert not first._handles
    with torch.no_grad():
        second.refresh(model, "feat")
        inputs, outputs, blocks = dgl_mvs.blocks.history_blocks(g, torch.arange(40), 2)
        out = model(blocks, g.ndata["feat"][inputs])
    torch.testing.assert_close(out, full[outputs], atol=TOL, rtol=0)
    loaded = pickle.loads(pickle.dumps(model))  # torch.save pickles the same way
    torch.testing.assert_close(_full(loaded, g, 2), full, atol=0, rtol=0)
    with pytest.raises(RuntimeError, match=r"saved \(or pickled\) with a dgl_mvs.History"):
        loaded(blocks, g.ndata["feat"][inputs])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # replaces the placeholders, silently
        dgl_mvs.History(g, [16]).attach(loaded.layers)
    assert all(len(_ours(layer)) == 1 for layer in loaded.layers)
    tied = SAGEConv(16, 16, "mean")
    with pytest.raises(ValueError, match="layers 1 and 2 are one module"):
        dgl_mvs.History(g, [16, 16]).attach([model.layers[0], tied, tied])


# ---------------------------------------------------------------- 2. the first layer's input
class Skip(nn.Module):
    """A first layer with a skip connection that reads x[:num_dst], as DGL users write it."""

    def __init__(self, kind):
        super().__init__()
        self.layers = nn.ModuleList([LAYERS[kind](12, 16), LAYERS[kind](16, 5)])
        self.skip = nn.Linear(12, 16)

    def forward(self, blocks, x):
        h = self.layers[0](blocks[0], x) + self.skip(x[: blocks[0].num_dst_nodes()])
        return self.layers[1](blocks[1], F.relu(h))


class PairCall(nn.Module):
    """Layers called DGL's older way, with (source, destination) inputs."""

    def __init__(self, kind):
        super().__init__()
        self.layers = nn.ModuleList([LAYERS[kind](12, 16), LAYERS[kind](16, 5)])

    def forward(self, blocks, x):
        h = x
        for i, (layer, block) in enumerate(zip(self.layers, blocks)):
            h = layer(block, (h, h[: block.num_dst_nodes()]))
            h = F.relu(h) if i == 0 else h
        return h


@pytest.mark.parametrize("kind", ["gcn_both", "gcn_right", "sage_gcn", "sage", "gin_sum"])
@pytest.mark.parametrize("model_class", [Skip, PairCall])
def test_the_first_blocks_destination_rows_are_raw_features(kind, model_class):
    torch.manual_seed(0)
    g = random_graph()
    model = model_class(kind).eval()
    full = _full(model, g, 2)
    sampler = dgl_mvs.OneHopSampler(g, model, **FEATS)
    seeds = torch.randperm(g.num_nodes())[:60]
    _, _, blocks = sampler.blocks(g, seeds)
    first = blocks[0]
    assert torch.equal(first.srcdata["feat"][: first.num_dst_nodes()],
                       g.ndata["feat"][first.dstdata[dgl.NID].long()])
    with torch.no_grad():
        out = model(blocks, first.srcdata["feat"])
    torch.testing.assert_close(out, full[seeds], atol=TOL, rtol=0)


class Projected(nn.Module):
    def __init__(self, proj, width=12):
        super().__init__()
        self.proj = proj
        self.layers = nn.ModuleList([GraphConv(width, 16, allow_zero_in_degree=True),
                                     GraphConv(16, 5, allow_zero_in_degree=True)])

    def forward(self, blocks, x):
        h = F.relu(self.layers[0](blocks[0], self.proj(x)))
        return self.layers[1](blocks[1], h)


def test_input_projections_and_input_dropout_are_refused():
    g = random_graph()
    with pytest.raises(ValueError, match=r"takes 32 input features but g.ndata\['feat'\] has "
                                         r"12.*input projection"):
        dgl_mvs.OneHopSampler(g, Projected(nn.Linear(12, 32), 32), **FEATS)
    with pytest.raises(ValueError, match=r"feat_drop=0.5.*block_sampler=dgl.dataloading."
                                         r"NeighborSampler"):
        dgl_mvs.OneHopSampler(g, [SAGEConv(12, 16, "mean", feat_drop=0.5),
                                  SAGEConv(16, 5, "mean")], **FEATS)
    dgl_mvs.OneHopSampler(g, [SAGEConv(12, 16, "mean"),  # dropout above the first layer
                              SAGEConv(16, 5, "mean", feat_drop=0.5)], **FEATS)
    for proj in (nn.Linear(12, 12), nn.Sequential(nn.Linear(12, 12), nn.ReLU()),
                 nn.Dropout(0.2), nn.BatchNorm1d(12)):
        model = Projected(proj).train()
        sampler = dgl_mvs.OneHopSampler(g, model, **FEATS)
        _, _, blocks = sampler.blocks(g, torch.arange(30))
        with pytest.raises(ValueError, match="did not get the raw input features.*dropout on "
                                             "the input.*input projection"):
            model(blocks, blocks[0].srcdata["feat"])
    model = Projected(nn.Dropout(0.2)).eval()  # dropout off: the raw features pass
    model(blocks, blocks[0].srcdata["feat"].clone())


def test_the_alternative_for_input_projections_runs():
    """The errors' advice: DGL's blocks with importance-sampled seeds, the model unchanged."""
    g = dgl.add_self_loop(random_graph())
    model = Projected(nn.Sequential(nn.Linear(12, 12), nn.ReLU()))
    sampler = dgl_mvs.MVSSampler(g, torch.arange(200), 16,
                                 block_sampler=dgl.dataloading.NeighborSampler([10, 10]), **FEATS)
    sampler.set_epoch(0)
    _, output_nodes, blocks = next(iter(dgl.dataloading.DataLoader(g, sampler.step_ids(),
                                                                   sampler)))
    logits = model(blocks, blocks[0].srcdata["feat"])
    sampler.update_scores(blocks, dgl_mvs.cross_entropy_grad_norm(
        logits.detach(), blocks[-1].dstdata["label"]))


# ---------------------------------------------------------------- 3. changes to the data
@pytest.mark.parametrize("write", ["data", "numpy"])
def test_writes_that_bypass_the_version_counter_are_followed(write):
    torch.manual_seed(0)
    g = random_graph()
    model = Model("sage", 2).eval()
    sampler = dgl_mvs.OneHopSampler(g, model, **FEATS)
    seeds = torch.arange(40)
    feat = g.ndata["feat"]
    if write == "data":
        feat.data.mul_(3.0)
    else:
        feat.numpy()[:] *= 3.0
    torch.testing.assert_close(_out(model, sampler, g, seeds), _full(model, g, 2)[seeds],
                               atol=TOL, rtol=0)


@pytest.mark.timeout(120)  # worker processes: never hang the suite
def test_a_stale_worker_names_update_aggregates_which_fixes_it():
    torch.manual_seed(0)
    g = random_graph()
    model = Model("sage", 2).eval()
    sampler = dgl_mvs.MVSSampler(g, torch.arange(200), 16, model=model, score_every=0, **FEATS)
    g.ndata["feat"].numpy()[:] *= 2.0  # no version bump: only the rows' checksums see it
    sampler.set_epoch(0)
    loader = dgl.dataloading.DataLoader(g, sampler.step_ids(), sampler, num_workers=1)
    with pytest.raises(RuntimeError, match=r"call sampler.update_aggregates\(\) in the "
                                           "training process"):
        next(iter(loader))
    sampler.update_aggregates()
    _, output_nodes, blocks = next(iter(loader))
    with torch.no_grad():
        out = model(blocks, blocks[0].srcdata["feat"])
    torch.testing.assert_close(out, _full(model, g, 2)[output_nodes], atol=TOL, rtol=0)


def _epoch(loader, model, g):
    full = _full(model, g, 2)
    for _, output_nodes, blocks in loader:
        with torch.no_grad():
            out = model(blocks, blocks[0].srcdata["feat"])
        torch.testing.assert_close(out, full[output_nodes], atol=TOL, rtol=0)


@pytest.mark.timeout(120)  # worker processes: never hang the suite
def test_persistent_workers_with_old_features_are_caught_and_the_advice_works():
    torch.manual_seed(0)
    g = random_graph()
    model = Model("sage", 2).eval()
    sampler = dgl_mvs.OneHopSampler(g, model, **FEATS)
    options = dict(batch_size=32, num_workers=1, persistent_workers=True)
    loader = dgl.dataloading.DataLoader(g, torch.arange(64), sampler, **options)
    _epoch(loader, model, g)
    g.ndata["feat"] = g.ndata["feat"] * 2.0  # the worker keeps its copy of the old graph
    with pytest.raises(RuntimeError, match=r"persistent_workers=True keeps that copy.*"
                                           r"update_aggregates\(\).*share_memory_\(\)"):
        _epoch(loader, model, g)
    # The advice: shared features, fresh aggregates, a new DataLoader.
    g.ndata["feat"].share_memory_()
    sampler.update_aggregates()
    loader = dgl.dataloading.DataLoader(g, torch.arange(64), sampler, **options)
    _epoch(loader, model, g)
    g.ndata["feat"].mul_(0.5)  # in place: the worker sees the rows, not the new aggregates
    with pytest.raises(RuntimeError, match=r"call sampler.update_aggregates\(\) in the "
                                           "training process"):
        _epoch(loader, model, g)
    sampler.update_aggregates()  # in place: the same workers see it
    _epoch(loader, model, g)


def test_edges_added_in_place_recompute_aggregates_and_snapshot():
    torch.manual_seed(0)
    g = random_graph()
    model = Model("sage", 2).eval()
    sampler = dgl_mvs.OneHopSampler(g, model, [-1, 2], **FEATS)
    g.add_edges(torch.randint(0, 400, (500,)), torch.randint(0, 400, (500,)))
    seeds = torch.arange(60)
    out = _out(model, sampler, g, seeds, torch.Generator().manual_seed(4))
    torch.testing.assert_close(out, _full(model, g, 2)[seeds], atol=TOL, rtol=0)
    assert sampler.refreshed == 2  # the snapshot followed the edges


def test_another_graph_is_refused_and_a_copy_accepted():
    g = random_graph()
    model = Model("sage", 2)
    sampler = dgl_mvs.OneHopSampler(g, model, **FEATS)
    other = random_graph(seed=1)  # same node count, other edges
    with pytest.raises(ValueError, match="built for another graph"):
        sampler.blocks(other, torch.arange(4))
    with pytest.raises(ValueError, match="built for another graph"):
        dgl_mvs.MVSSampler(other, torch.arange(200), 16, block_sampler=sampler, **FEATS)
    same = dgl.graph(g.edges(), num_nodes=g.num_nodes())
    same.ndata["feat"] = g.ndata["feat"].clone()
    sampler.blocks(same, torch.arange(4))
    same.ndata["feat"] = same.ndata["feat"] * 2.0  # same edges, other features
    with pytest.raises(ValueError, match=r"has other g.ndata\['feat'\] than the graph"):
        sampler.blocks(same, torch.arange(4))


def test_learnable_features_are_refused_and_the_alternative_runs():
    g = random_graph()
    g.ndata["emb"] = nn.Parameter(torch.randn(g.num_nodes(), 12))
    with pytest.raises(ValueError, match=r"requires grad.*nn.Embedding.*NeighborSampler"):
        dgl_mvs.OneHopSampler(g, Model("sage", 2), prefetch_node_feats=["emb"])
    # The advice: a learnable table in the model, indexed with input_nodes, on DGL's blocks.
    table, model = nn.Embedding(g.num_nodes(), 12), Model("sage", 2)
    sampler = dgl_mvs.MVSSampler(g, torch.arange(200), 16, prefetch_labels=["label"],
                                 block_sampler=dgl.dataloading.NeighborSampler([10, 10]))
    sampler.set_epoch(0)
    input_nodes, _, blocks = next(iter(dgl.dataloading.DataLoader(g, sampler.step_ids(),
                                                                  sampler)))
    model(blocks, table(input_nodes)).sum().backward()
    assert table.weight.grad.abs().sum() > 0


def test_distdgl_rows_standardised_after_add_aggregates_are_refused():
    """DistOneHopSampler's row check, on the node data that partition_graph would save."""
    g = random_graph()
    model = Model("sage", 2)
    added = dgl_mvs.distgraph.add_aggregates(g, model)
    assert added == ["mvs_agg_mean_feat", "mvs_agg_check_mean_feat"]
    sampler = dgl_mvs.DistOneHopSampler.__new__(dgl_mvs.DistOneHopSampler)
    sampler.__dict__.update(_keys={"feat": added[0]}, _checks={"feat": added[1]}, _pair=True,
                            _own_row=True, hooked=False, num_nodes=g.num_nodes())
    sampler._first_block(g, torch.arange(30))  # unchanged: fine
    feat = g.ndata["feat"]
    g.ndata["feat"] = (feat - feat.mean(0)) / feat.std(0)
    with pytest.raises(ValueError, match=r"differ from the features that add_aggregates "
                                         r"aggregated.*add_aggregates\(g, model\) after"):
        sampler._first_block(g, torch.arange(30))


# ---------------------------------------------------------------- 4. spawned workers
@pytest.mark.timeout(120)  # worker processes: never hang the suite
def test_spawned_workers_give_the_same_batches():
    g = random_graph()
    model = Model("gcn_both", 2)
    onehop = dgl_mvs.OneHopSampler(g, model, **FEATS)
    loader = dgl.dataloading.DataLoader(g, torch.arange(96), onehop, batch_size=32,
                                        shuffle=True, num_workers=2,
                                        multiprocessing_context="spawn")
    seen = []
    for _, output_nodes, blocks in loader:
        _, _, expected = onehop.blocks(g, output_nodes)  # exact blocks: no draw
        assert torch.equal(blocks[0].srcdata["feat"], expected[0].srcdata["feat"])
        assert torch.equal(blocks[1].srcdata[dgl.NID], expected[1].srcdata[dgl.NID])
        seen.append(output_nodes)
    assert torch.equal(torch.sort(torch.cat(seen)).values, torch.arange(96))
    batches = {}
    for workers in (0, 2):  # two samplers with one seed: one run each, as a user would
        torch.manual_seed(0)
        sage = Model("sage", 2)
        mvs = dgl_mvs.MVSSampler(g, torch.arange(200), 32, model=sage, seed=3, **FEATS)
        mvs.set_epoch(0)
        extra = {"multiprocessing_context": "spawn"} if workers else {}
        loader = dgl.dataloading.DataLoader(g, mvs.step_ids(), mvs, num_workers=workers,
                                            **extra)
        batches[workers] = []
        for _, o, b in loader:
            batches[workers].append((o, b[0].srcdata["feat"], b[-1].dstdata["mvs_weight"]))
            with torch.no_grad():
                logits = sage(b, b[0].srcdata["feat"])
            # Workers draw each interval from the probabilities update_scores publishes.
            mvs.update_scores(b, dgl_mvs.cross_entropy_grad_norm(logits,
                                                                 b[-1].dstdata["label"]))
    assert len(batches[0]) == len(batches[2]) == mvs.steps_per_epoch
    for mine, theirs in zip(batches[0], batches[2]):
        assert all(torch.equal(a, b) for a, b in zip(mine, theirs))


# ---------------------------------------------------------------- 5. where layers are, messages
class Conv12(nn.Module):
    """DGL's RGCN/GCN example style: self.conv1, self.conv2."""

    def __init__(self, conv):
        super().__init__()
        self.conv1, self.conv2 = conv(12, 16), conv(16, 5)

    def forward(self, blocks, x):
        return self.conv2(blocks[1], F.relu(self.conv1(blocks[0], x)))


class GAT(nn.Module):
    """DGL's GAT example style: self.gat_layers."""

    def __init__(self):
        super().__init__()
        self.gat_layers = nn.ModuleList([GATConv(12, 16, 1), GATConv(16, 5, 1)])

    def forward(self, blocks, x):
        h = F.relu(self.gat_layers[0](blocks[0], x).flatten(1))
        return self.gat_layers[1](blocks[1], h).flatten(1)


def test_layers_are_found_where_dgls_examples_keep_them():
    torch.manual_seed(0)
    g = random_graph()
    model = Conv12(lambda a, b: GraphConv(a, b, allow_zero_in_degree=True)).eval()
    sampler = dgl_mvs.OneHopSampler(g, model, [-1, 2], **FEATS)
    out = _out(model, sampler, g, torch.arange(40), torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, _full(model, g, 2)[:40], atol=TOL, rtol=0)
    with pytest.raises(ValueError, match=r"^GATConv weighs neighbours by attention.*"
                                         r"block_sampler='history'"):
        dgl_mvs.OneHopSampler(g, GAT(), **FEATS)
    # MVSSampler's default falls back to DGL's blocks for attention layers, and says so.
    with pytest.warns(UserWarning, match="GATConv"):
        sampler = dgl_mvs.MVSSampler(g, torch.arange(200), 16, model=GAT(), **FEATS)
    assert isinstance(sampler.block_sampler, dgl.dataloading.NeighborSampler)
    with pytest.raises(ValueError, match="found no graph convolution.*self.layers"):
        dgl_mvs.OneHopSampler(g, nn.Module(), **FEATS)


def test_the_alternatives_for_attention_layers_run():
    """Each call that the attention message names: history blocks, DGL's blocks."""
    torch.manual_seed(0)
    g = random_graph()
    model = GAT()
    history = dgl_mvs.History(g, widths=[16])
    history.attach(model.gat_layers)
    sampler = dgl_mvs.MVSSampler(g, torch.arange(200), 16, num_layers=2,
                                 block_sampler="history", **FEATS)
    sampler.set_epoch(0)
    input_nodes, _, blocks = next(iter(dgl.dataloading.DataLoader(g, sampler.step_ids(),
                                                                  sampler)))
    logits = model(blocks, g.ndata["feat"][input_nodes])
    sampler.update_scores(blocks, dgl_mvs.cross_entropy_grad_norm(
        logits.detach(), blocks[-1].dstdata["label"]))
    history.detach()
    g = dgl.add_self_loop(g)
    sampler = dgl_mvs.MVSSampler(g, torch.arange(200), 16,
                                 block_sampler=dgl.dataloading.NeighborSampler([10, 10]), **FEATS)
    sampler.set_epoch(0)
    _, _, blocks = next(iter(dgl.dataloading.DataLoader(g, sampler.step_ids(), sampler)))
    logits = model(blocks, blocks[0].srcdata["feat"])
    sampler.update_scores(blocks, dgl_mvs.cross_entropy_grad_norm(
        logits.detach(), blocks[-1].dstdata["label"]))
    loader = dgl.dataloading.DataLoader(g, torch.arange(64), dgl.dataloading.NeighborSampler(
        [10, 10], **FEATS), batch_size=32)
    _, _, blocks = next(iter(loader))
    assert model(blocks, blocks[0].srcdata["feat"]).shape == (32, 5)


def test_a_block_given_as_the_graph_is_called_a_block():
    g = random_graph()
    _, _, blocks = dgl.dataloading.NeighborSampler([5]).sample(g, torch.arange(10))
    with pytest.raises(ValueError, match=r"got a block \(message flow graph, MFG\)"):
        dgl_mvs.OneHopSampler(blocks[0], Model("sage", 2), **FEATS)


def test_docstring_examples_run():
    import doctest

    import dgl_mvs.distgraph
    import dgl_mvs.history
    import dgl_mvs.hooks

    for module in (dgl_mvs.hooks, dgl_mvs.distgraph, dgl_mvs.history):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted > 0 and result.failed == 0, module.__name__
