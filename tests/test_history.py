"""History in g.ndata: push/pull semantics, last-write records, refresh, and its errors."""
import dgl
import pytest
import torch

import dgl_mvs
from dgl_mvs.blocks import exact_blocks, history_blocks
from dgl_mvs import keys
from conftest import random_graph
from models import GNN


def _model_and_history(graph, kind="sage", num_layers=2, hidden=16):
    torch.manual_seed(0)
    model = GNN(kind, 12, hidden, 5, num_layers)
    history = dgl_mvs.History(graph, [hidden] * (num_layers - 1))
    history.attach(model.layers)
    return model, history


def test_histories_live_in_ndata(graph):
    dgl_mvs.History(graph, [16, 8])
    assert graph.ndata[keys.history_key(1)].shape == (graph.num_nodes(), 16)
    assert graph.ndata[keys.history_key(2)].shape == (graph.num_nodes(), 8)
    assert bool((graph.ndata[keys.history_clock_key(1)] == -1).all())


def test_forward_pushes_batch_and_pulls_halo_at_forward_time(graph):
    model, history = _model_and_history(graph)
    model.train()
    batch = torch.arange(30)
    input_nodes, _, blocks = history_blocks(graph, batch, 2)
    halo = input_nodes[30:]
    # Histories written *after* sampling are the ones the forward uses.
    marker = torch.full((halo.numel(), 16), 3.0)
    history.push(1, halo, marker)
    seen = {}

    def spy(module, args):
        seen["h"] = args[1].detach().clone()

    handle = model.layers[1].register_forward_pre_hook(spy)  # runs after the history hook
    model(blocks, graph.ndata["feat"][input_nodes])
    handle.remove()
    torch.testing.assert_close(seen["h"][30:], marker)
    # batch rows were pushed, detached, with the clock of this forward
    torch.testing.assert_close(history.pull(1, batch), seen["h"][:30])
    assert not history.pull(1, batch).requires_grad
    assert bool((history.last_write(1, batch) == history.clock).all())
    assert history.clock == 1


def test_gradients_flow_only_through_fresh_rows(graph):
    model, history = _model_and_history(graph)
    input_nodes, _, blocks = history_blocks(graph, torch.arange(30), 2)
    out = model(blocks, graph.ndata["feat"][input_nodes])
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_exact_blocks_refresh_the_neighbourhood(graph):
    model, history = _model_and_history(graph)
    model.eval()
    input_nodes, _, blocks = exact_blocks(graph, torch.arange(10), 2)
    with torch.no_grad():
        model(blocks, graph.ndata["feat"][input_nodes])
    one_hop = blocks[1].srcdata[dgl.NID]
    assert bool((history.last_write(1, one_hop) >= 0).all())
    untouched = torch.ones(graph.num_nodes(), dtype=torch.bool)
    untouched[one_hop] = False
    assert bool((graph.ndata[keys.history_clock_key(1)][untouched] == -1).all())


def test_refresh_restores_training_mode_and_needs_attach(graph):
    model, history = _model_and_history(graph)
    model.train()
    history.refresh(model, "feat")
    assert model.training
    history.detach()
    with pytest.raises(RuntimeError, match="attach"):
        history.refresh(model, "feat")


def test_stock_blocks_and_full_graph_pass_through(graph):
    model, history = _model_and_history(graph)
    before = graph.ndata[keys.history_key(1)].clone()
    _, _, blocks = dgl.dataloading.NeighborSampler([3, 3]).sample(graph, torch.arange(10))
    model(blocks, graph.ndata["feat"][blocks[0].srcdata[dgl.NID]])
    model([graph, graph], graph.ndata["feat"])
    assert torch.equal(graph.ndata[keys.history_key(1)], before)


def test_state_dict_roundtrip_and_mismatch(graph):
    model, history = _model_and_history(graph)
    history.refresh(model, "feat")
    state = history.state_dict()
    other = dgl_mvs.History(dgl.graph(([0], [1]), num_nodes=graph.num_nodes()), [16])
    other.load_state_dict(state)
    torch.testing.assert_close(other.pull(1, torch.arange(5)), history.pull(1, torch.arange(5)))
    small = dgl_mvs.History(dgl.graph(([0], [1])), [16])
    with pytest.raises(ValueError, match="nodes"):
        small.load_state_dict(state)
    wide = dgl_mvs.History(dgl.graph(([0], [1]), num_nodes=graph.num_nodes()), [8])
    with pytest.raises(ValueError, match="widths"):
        wide.load_state_dict(state)


def test_errors(graph):
    model = GNN("sage", 12, 16, 5, 2)
    history = dgl_mvs.History(graph, [8])  # the model's hidden width is 16
    history.attach(model.layers)
    input_nodes, _, blocks = history_blocks(graph, torch.arange(10), 2)
    with pytest.raises(ValueError, match="width 16 but its history has width 8"):
        model(blocks, graph.ndata["feat"][input_nodes])
    input_nodes, _, blocks = exact_blocks(graph, torch.arange(10), 2)
    with pytest.raises(ValueError, match="width 16 but its history has width 8"):
        model(blocks, graph.ndata["feat"][input_nodes])  # the all-fresh path checks too
    sampler = dgl_mvs.HistorySampler(2, prefetch_node_feats=["feat"])
    _, _, blocks = sampler.sample(graph, torch.arange(10))
    with pytest.raises(TypeError, match="only loaded by dgl.dataloading.DataLoader"):
        model(blocks, blocks[0].srcdata["feat"])  # a LazyFeature outside the DataLoader
    with pytest.raises(ValueError, match="2 layers"):
        history.attach(list(model.layers) * 2)
    with pytest.raises(ValueError, match="positive"):
        dgl_mvs.History(graph, [0])
    with pytest.raises(ValueError, match="homogeneous"):
        dgl_mvs.History(dgl.heterograph({("a", "r", "b"): ([0], [0])}), [4])
    graph.ndata["mvs_hist_1"] = torch.zeros(graph.num_nodes(), 3)
    with pytest.raises(ValueError, match="does not match width"):
        dgl_mvs.History(graph, [16])

    fresh_graph = random_graph()
    model, history = _model_and_history(fresh_graph)
    with pytest.raises(KeyError, match="feature key 'missing'"):
        history.refresh(model, "missing")
    # blocks of another batch than the layer input
    _, _, other = history_blocks(fresh_graph, torch.arange(50), 2)
    with pytest.raises(ValueError, match="source nodes"):
        model(other, fresh_graph.ndata["feat"][input_nodes])
    # seeds on another device than the graph
    with pytest.raises(ValueError, match="seed nodes are on meta but the graph is on cpu"):
        history_blocks(graph, torch.empty(3, dtype=torch.int64, device="meta"), 2)


def test_hook_dropout_keeps_histories_clean(graph):
    """attach(dropout=p) drops hidden inputs after the exchange: pushed rows are clean."""
    torch.manual_seed(0)
    model = GNN("sage", 12, 16, 5, 2).train()
    history = dgl_mvs.History(graph, [16])
    history.attach(model.layers, dropout=0.5)
    input_nodes, _, blocks = history_blocks(graph, torch.arange(30), 2)
    seen = {}
    handle = model.layers[1].register_forward_pre_hook(
        lambda module, args: seen.update(h=args[1].detach().clone()))
    model(blocks, graph.ndata["feat"][input_nodes])
    handle.remove()
    pushed = history.pull(1, torch.arange(30))
    assert bool((pushed > 0).float().mean() > 0.3)  # relu outputs, no dropout zeros
    dropped = seen["h"][:30]
    assert bool(((dropped == 0) & (pushed > 0)).any())  # the layer saw dropped inputs
    kept = dropped != 0
    torch.testing.assert_close(dropped[kept], 2 * pushed[kept])  # inverted dropout scale
    with pytest.raises(ValueError, match="dropout"):
        history.attach(model.layers, dropout=1.0)


def test_state_saved_with_the_old_last_write_key_loads(graph):
    history = dgl_mvs.History(graph, [16])
    history.push(1, torch.arange(5), torch.ones(5, 16))
    state = history.state_dict()
    state["mvs_hist_step_1"] = state.pop(keys.history_clock_key(1))
    fresh = dgl_mvs.History(random_graph(), [16])
    fresh.load_state_dict(state)
    nodes = torch.arange(6)
    assert torch.equal(fresh.last_write(1, nodes), history.last_write(1, nodes))
