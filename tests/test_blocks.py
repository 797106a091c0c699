"""The DGL block contract for every block kind, and the builders' errors."""
import dgl
import pytest
import torch

import dgl_mvs
from dgl_mvs.blocks import control_variate_blocks, exact_blocks, history_blocks
from conftest import random_graph

NID, EID = dgl.NID, dgl.EID


def _builders(num_layers):
    gen = torch.Generator().manual_seed(0)
    return {
        "history": lambda g, s: history_blocks(g, s, num_layers),
        "exact": lambda g, s: exact_blocks(g, s, num_layers),
        "cv": lambda g, s: control_variate_blocks(g, s, [2] * num_layers, generator=gen),
    }


def check_contract(g, input_nodes, output_nodes, blocks):
    assert torch.equal(blocks[0].srcdata[NID], input_nodes)
    assert torch.equal(blocks[-1].dstdata[NID], output_nodes)
    for i, block in enumerate(blocks):
        assert block.is_block
        num_dst = block.num_dst_nodes()
        assert torch.equal(block.srcdata[NID][:num_dst], block.dstdata[NID])
        # every block edge is an edge of g, found through EID
        src, dst = block.edges()
        g_src, g_dst = g.find_edges(block.edata[EID])
        assert torch.equal(block.srcdata[NID][src.long()], g_src)
        assert torch.equal(block.dstdata[NID][dst.long()], g_dst)
        if i + 1 < len(blocks):
            assert torch.equal(block.dstdata[NID], blocks[i + 1].srcdata[NID])


@pytest.mark.parametrize("idtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("kind", ["history", "exact", "cv"])
def test_block_contract(kind, num_layers, idtype):
    g = random_graph(idtype=idtype)
    seeds = torch.randperm(g.num_nodes())[:50].to(idtype)
    input_nodes, output_nodes, blocks = _builders(num_layers)[kind](g, seeds)
    assert len(blocks) == num_layers
    assert torch.equal(output_nodes, seeds)
    check_contract(g, input_nodes, output_nodes, blocks)


def test_history_blocks_hold_the_full_in_neighbourhood(graph):
    seeds = torch.arange(30)
    input_nodes, _, blocks = history_blocks(graph, seeds, 3)
    expected = torch.unique(torch.cat([seeds, graph.in_edges(seeds)[0]]))
    assert torch.equal(torch.sort(input_nodes).values, expected)
    for i, block in enumerate(blocks):
        # same node set at every layer: no neighbour explosion
        assert block.num_src_nodes() == input_nodes.numel()
        assert torch.equal(block.in_degrees()[:30], graph.in_degrees(seeds))
        assert block.num_edges() == graph.in_degrees(seeds).sum()
        fresh = block.srcdata[dgl_mvs.keys.FRESH]
        assert bool(fresh.all()) if i == 0 else int(fresh.sum()) == 30


def test_exact_blocks_are_full_neighbourhoods(graph):
    seeds = torch.arange(10)
    input_nodes, _, blocks = exact_blocks(graph, seeds, 2)
    one_hop = torch.unique(torch.cat([seeds, graph.in_edges(seeds)[0]]))
    two_hop = torch.unique(torch.cat([one_hop, graph.in_edges(one_hop)[0]]))
    assert torch.equal(torch.sort(input_nodes).values, two_hop)
    assert torch.equal(blocks[0].in_degrees(), graph.in_degrees(blocks[0].dstdata[NID]))


def test_cv_blocks_sample_fanout_and_scale(graph):
    seeds = torch.arange(40)
    _, _, blocks = control_variate_blocks(
        graph, seeds, [3, 2], generator=torch.Generator().manual_seed(0)
    )
    last = blocks[-1]
    deg = graph.in_degrees(seeds).float()
    sampled = last.edata[dgl_mvs.keys.SAMPLED]
    _, dst = last.edges()
    per_dst = torch.bincount(dst[sampled].long(), minlength=40).float()
    assert torch.equal(per_dst, deg.clamp(max=2))
    # history weights: mean over the full neighbourhood; sampled weights: 1 / s_v
    hw = last.edata[dgl_mvs.keys.HISTORY_WEIGHTS]
    torch.testing.assert_close(hw, 1.0 / deg[dst.long()])
    ew = last.edata[dgl_mvs.keys.EDGE_WEIGHTS]
    torch.testing.assert_close(ew[sampled], 1.0 / deg.clamp(max=2)[dst[sampled].long()])
    assert bool((ew[~sampled] == 0).all())
    # fresh sources of the last block: the batch and its sampled neighbours
    src_nodes = last.srcdata[NID]
    expected = torch.unique(torch.cat([seeds, src_nodes[last.edges()[0][sampled].long()]]))
    fresh = last.srcdata[dgl_mvs.keys.FRESH]
    assert torch.equal(torch.sort(src_nodes[fresh]).values, expected)


def test_cv_neighbour_draws_are_uniform():
    """Each in-neighbour of a node is sampled with probability fanout / degree."""
    g = dgl.graph((torch.arange(1, 11), torch.zeros(10, dtype=torch.int64)))
    counts = torch.zeros(11)
    gen = torch.Generator().manual_seed(0)
    trials = 4000
    for _ in range(trials):
        _, _, blocks = control_variate_blocks(g, torch.tensor([0]), [3], generator=gen)
        b = blocks[0]
        picked = b.srcdata[NID][b.edges()[0][b.edata[dgl_mvs.keys.SAMPLED]].long()]
        counts[picked] += 1
    freq = counts[1:] / trials
    sigma = (0.3 * 0.7 / trials) ** 0.5
    assert ((freq - 0.3).abs() < 5 * sigma).all(), freq


def test_edge_weights_follow_eids(graph):
    graph.edata["w"] = dgl_mvs.gcn_norm(graph)
    for kind in ("history", "exact"):
        fn = history_blocks if kind == "history" else exact_blocks
        _, _, blocks = fn(graph, torch.arange(20), 2, edge_weight="w")
        for block in blocks:
            torch.testing.assert_close(
                block.edata["edge_weights"], graph.edata["w"][block.edata[EID]]
            )


def test_gcn_norm_matches_dgl(graph):
    from dgl.nn import EdgeWeightNorm

    expected = EdgeWeightNorm(norm="both")(graph, torch.ones(graph.num_edges()))
    torch.testing.assert_close(dgl_mvs.gcn_norm(graph), expected)


def test_builder_errors(graph):
    hetero = dgl.heterograph({("a", "r", "b"): (torch.tensor([0]), torch.tensor([0]))})
    with pytest.raises(ValueError, match="homogeneous"):
        history_blocks(hetero, torch.tensor([0]), 2)
    with pytest.raises(TypeError, match="DGLGraph"):
        history_blocks("not a graph", torch.tensor([0]), 2)
    with pytest.raises(ValueError, match="empty"):
        history_blocks(graph, torch.tensor([], dtype=torch.int64), 2)
    with pytest.raises(ValueError, match="must lie in"):
        exact_blocks(graph, torch.tensor([graph.num_nodes()]), 2)
    with pytest.raises(ValueError, match="num_layers"):
        history_blocks(graph, torch.tensor([0]), 0)
    with pytest.raises(KeyError, match="not in g.edata"):
        history_blocks(graph, torch.tensor([0]), 2, edge_weight="missing")
    with pytest.raises(ValueError, match="unique"):
        history_blocks(graph, torch.tensor([0, 0]), 2)
