"""Misuse gets a clear error or works; nothing silent, nothing hangs (issue "hardening")."""
import time

import dgl
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from dgl.nn import GraphConv, SAGEConv

import dgl_mvs
from dgl_mvs.blocks import history_blocks
from conftest import random_graph
from test_onehop import Model
from test_sampler import attach_history, make_sampler, node_scores

FEATS = dict(prefetch_node_feats=["feat"], prefetch_labels=["label"])


# ---------------------------------------------------------------- 4. workers never stall
def test_workers_do_not_wait_for_missing_scores(graph):
    """No update_scores at all: an epoch with workers runs at once (it waited 60 s/interval)."""
    sampler = make_sampler(graph, score_timeout=0.0)
    sampler.set_epoch(0)
    loader = dgl.dataloading.DataLoader(graph, sampler.step_ids(), sampler, num_workers=2)
    tick = time.monotonic()
    assert len(list(loader)) == sampler.steps_per_epoch
    assert time.monotonic() - tick < 30


def test_unscored_draws_are_reported_from_the_training_process(graph):
    sampler = make_sampler(graph)
    sampler.set_epoch(0)
    loader = dgl.dataloading.DataLoader(graph, sampler.step_ids(), sampler)
    with pytest.warns(RuntimeWarning, match="drawn before the scores"):
        for i, (_, output_nodes, blocks) in enumerate(loader):
            if i == 0:
                continue  # the checkpoint's scores never arrive
            sampler.update_scores(blocks, node_scores(output_nodes))
            if i == 2:
                break
    with pytest.warns(RuntimeWarning, match="update_scores was not called during epoch 1"):
        sampler.set_epoch(1)
        sampler.set_epoch(2)


# ---------------------------------------------------------------- 5. history hooks
def _history_setup(layer_factory, idtype=torch.int64):
    torch.manual_seed(0)
    g = random_graph(idtype=idtype)
    layers = torch.nn.ModuleList([layer_factory(12, 16), layer_factory(16, 5)])
    history = dgl_mvs.History(g, [16])
    history.attach(layers)
    return g, layers, history


def test_keyword_calls_go_through_the_history_hook():
    g, layers, history = _history_setup(lambda a, b: SAGEConv(a, b, "mean"))

    def model(blocks, x):
        h = F.relu(layers[0](graph=blocks[0], feat=x))
        return layers[1](graph=blocks[1], feat=h)

    with torch.no_grad():
        full = model([g, g], g.ndata["feat"])
        history.refresh(model, "feat")
        inputs, outputs, blocks = history_blocks(g, torch.arange(40), 2)
        out = model(blocks, g.ndata["feat"][inputs])
    torch.testing.assert_close(out, full[outputs], atol=1e-5, rtol=0)


def test_zero_in_degree_batch_nodes_still_raise_but_halo_rows_do_not():
    g, layers, history = _history_setup(lambda a, b: GraphConv(a, b, norm="right"))
    alone = int(torch.nonzero(g.in_degrees() == 0)[0]) if bool((g.in_degrees() == 0).any()) \
        else None
    if alone is None:  # make one: remove every in-edge of node 0
        g.remove_edges(g.in_edges(0, form="eid"))
        alone = 0
    with_edges = torch.nonzero(g.in_degrees() > 0).squeeze(1)[:30]

    def model(blocks, x):
        return layers[1](blocks[1], F.relu(layers[0](blocks[0], x)))

    inputs, _, blocks = history_blocks(g, with_edges, 2)
    model(blocks, g.ndata["feat"][inputs])  # halo rows have no in-edges: fine
    inputs, _, blocks = history_blocks(g, torch.cat([with_edges, torch.tensor([alone])]),
                                               2)
    with pytest.raises(dgl.DGLError, match="0-in-degree"):
        model(blocks, g.ndata["feat"][inputs])
    assert not layers[0]._allow_zero_in_degree  # DGL's own check is back after the call
    with pytest.raises(dgl.DGLError, match="0-in-degree"):
        layers[0](g, g.ndata["feat"])


def test_non_finite_activations_are_not_stored():
    g, layers, history = _history_setup(lambda a, b: SAGEConv(a, b, "mean"))
    before = g.ndata[dgl_mvs.keys.history_key(1)].clone()
    bad = torch.randn(10, 16)
    bad[3, 2] = float("nan")
    with pytest.raises(ValueError, match="layer 1 has 1 row"):
        history.push(1, torch.arange(10), bad)
    assert torch.equal(g.ndata[dgl_mvs.keys.history_key(1)], before)


def test_forgetting_attach_is_an_error_not_wrong_halo_rows():
    g = random_graph()
    sampler = dgl_mvs.MVSSampler(g, torch.arange(200), 16, num_layers=2, block_sampler="history",
                                 **FEATS)
    sampler.set_epoch(0)
    _, output_nodes, blocks = next(iter(dgl.dataloading.DataLoader(g, sampler.step_ids(),
                                                                   sampler)))
    with pytest.raises(ValueError, match="no dgl_mvs.History is attached"):
        sampler.update_scores(blocks, node_scores(output_nodes))


def test_layer_count_mismatch_is_named():
    g = random_graph()
    attach_history(g, 2)
    sampler = dgl_mvs.MVSSampler(g, torch.arange(200), 16, num_layers=3, block_sampler="history",
                                 **FEATS)
    loader = dgl.dataloading.DataLoader(g, sampler.step_ids(), sampler)
    with pytest.raises(ValueError, match="give the sampler num_layers=2"):
        next(iter(loader))


# ---------------------------------------------------------------- 6. the DataLoader contract
def test_shuffled_steps_are_refused(graph):
    sampler = make_sampler(graph)
    loader = dgl.dataloading.DataLoader(graph, sampler.step_ids(), sampler, shuffle=True)
    with pytest.raises(ValueError, match="must not shuffle"):
        for _ in loader:
            pass


def test_evaluation_has_an_obvious_path(graph):
    model = Model("sage", 2)
    sampler = dgl_mvs.MVSSampler(graph, torch.arange(200), 16, model=model, **FEATS)
    with pytest.raises(ValueError, match="sampler.evaluation_sampler()"):
        next(iter(dgl.dataloading.DataLoader(graph, torch.arange(300, 400), sampler,
                                             batch_size=50)))
    loader = dgl.dataloading.DataLoader(graph, torch.arange(300, 400),
                                        sampler.evaluation_sampler(), batch_size=50)
    model.eval()
    with torch.no_grad():
        full = model([graph, graph], graph.ndata["feat"])
        for _, output_nodes, blocks in loader:
            out = model(blocks, blocks[0].srcdata["feat"])
            torch.testing.assert_close(out, full[output_nodes], atol=1e-5, rtol=0)
    history_sampler = make_sampler(graph)
    assert isinstance(history_sampler.evaluation_sampler(),
                      dgl.dataloading.MultiLayerFullNeighborSampler)


def test_blocks_of_another_sampler_or_epoch_are_refused(graph):
    first, second = make_sampler(graph), make_sampler(graph)
    first.set_epoch(0)
    _, output_nodes, blocks = next(iter(dgl.dataloading.DataLoader(graph, first.step_ids(),
                                                                   first)))
    with pytest.raises(ValueError, match="another MVSSampler"):
        second.update_scores(blocks, node_scores(output_nodes))
    first.update_scores(blocks, node_scores(output_nodes))
    first.set_epoch(1)
    frozen = first.state_dict()["frozen_interval"]
    with pytest.raises(ValueError, match="from epoch 0"):
        first.update_scores(blocks, node_scores(output_nodes))
    assert first.state_dict()["frozen_interval"] == frozen  # nothing rolled back


# ---------------------------------------------------------------- 8. argument coercions
def test_arguments_are_coerced_or_refused(graph):
    train = torch.arange(200)
    ok = make_sampler(graph, batch_size=np.int64(16), checkpoint_every=np.int32(5))
    assert ok.batch_size == 16 and ok.checkpoint_every == 5
    with pytest.raises(ValueError, match="integer node IDs or a boolean mask"):
        make_sampler(graph).__class__(graph, train.float(), 16, num_layers=2,
                                      block_sampler="history")
    with pytest.raises(ValueError, match="one entry per node"):
        dgl_mvs.MVSSampler(graph, torch.ones(10, dtype=torch.bool), 16, num_layers=2,
                           block_sampler="history")
    with pytest.raises(ValueError, match="uint8"):
        dgl_mvs.MVSSampler(graph, (torch.arange(400) % 2).to(torch.uint8), 16, num_layers=2,
                           block_sampler="history")
    with pytest.raises(ValueError, match="checkpoint_every"):
        make_sampler(graph, checkpoint_every=True)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        make_sampler(graph, steps_per_epoch=0)
    with pytest.raises(ValueError, match="epoch must be a non-negative integer"):
        ok.set_epoch(-1)
    with pytest.warns(RuntimeWarning, match="update_scores was not called"):
        ok.set_epoch(np.int64(2))
    assert ok.epoch == 2
    assert dgl_mvs.History(random_graph(), 16).widths == [16]
    with pytest.raises(ValueError, match="floating-point"):
        dgl_mvs.History(random_graph(), [16], dtype=torch.int64)
    g = random_graph()
    dgl_mvs.History(g, [16])
    with pytest.raises(ValueError, match="already holds torch.float32"):
        dgl_mvs.History(g, [16], dtype=torch.float64)
    with pytest.raises(ValueError, match="positive integers"):
        dgl_mvs.History(random_graph(), [16, 0])
