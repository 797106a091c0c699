"""``exclude_eids``: the block kinds and samplers leave the excluded edges out of every block.

The reference for a call with ``exclude_eids=E`` is the same call on the graph without ``E``
(same node IDs, edge IDs mapped back to the original graph): the blocks must be identical.
"""
import dgl
import pytest
import torch
from dgl.nn import SAGEConv

import dgl_mvs
from dgl_mvs.blocks import control_variate_blocks, exact_blocks, history_blocks
from conftest import random_graph
from models import GNN
from test_blocks import check_contract

NID, EID = dgl.NID, dgl.EID
TOL = 1e-5
KINDS = ["history", "exact", "cv"]


def _build(kind, g, seeds, num_layers=2, **kwargs):
    """Blocks of ``kind``; CV blocks draw from a fixed generator so two calls can be compared."""
    if kind == "history":
        return history_blocks(g, seeds, num_layers, **kwargs)
    if kind == "exact":
        return exact_blocks(g, seeds, num_layers, **kwargs)
    gen = torch.Generator().manual_seed(3)
    return control_variate_blocks(g, seeds, [2] * num_layers, generator=gen, **kwargs)


def _sampler(kind, num_layers=2):
    if kind == "history":
        return dgl_mvs.HistorySampler(num_layers)
    if kind == "exact":
        return dgl_mvs.ExactSampler(num_layers)
    return dgl_mvs.ControlVariateSampler([2] * num_layers)


def _setup(idtype=torch.int64, seed=0):
    """A graph, a batch, and an exclude set that hits the batch's own in-edges and others."""
    g = random_graph(idtype=idtype, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    seeds = torch.randperm(g.num_nodes(), generator=gen)[:50].to(idtype)
    own = g.in_edges(seeds[:15], form="eid")  # first hop of the batch
    others = torch.randperm(g.num_edges(), generator=gen)[:400].to(idtype)  # deeper hops too
    excluded = torch.cat([own, others])  # duplicates on purpose
    return g, seeds, excluded


def _without(g, excluded):
    """``g`` without ``excluded``, keeping node IDs; ``edata[EID]`` maps back to ``g``."""
    keep = torch.ones(g.num_edges(), dtype=torch.bool)
    keep[excluded.long()] = False
    return g.edge_subgraph(keep.nonzero().squeeze(1).to(g.idtype), relabel_nodes=False)


def _assert_same_blocks(g2, with_exclusion, reference):
    """Blocks built on ``g`` with exclusion equal those built on ``g2`` (EIDs mapped back)."""
    inputs, outputs, blocks = with_exclusion
    ref_inputs, ref_outputs, ref_blocks = reference
    assert torch.equal(inputs, ref_inputs) and torch.equal(outputs, ref_outputs)
    assert len(blocks) == len(ref_blocks)
    for block, ref in zip(blocks, ref_blocks):
        assert block.num_src_nodes() == ref.num_src_nodes()
        assert block.num_dst_nodes() == ref.num_dst_nodes()
        for a, b in zip(block.edges(), ref.edges()):
            assert torch.equal(a, b)
        assert torch.equal(block.edata[EID], g2.edata[EID][ref.edata[EID].long()])
        for key in ref.srcdata.keys():
            assert torch.equal(block.srcdata[key], ref.srcdata[key]), key
        for key in ref.edata.keys():
            if key != EID:
                assert torch.equal(block.edata[key], ref.edata[key]), key


def _assert_excluded(blocks, excluded):
    for block in blocks:
        assert not bool(torch.isin(block.edata[EID], excluded.to(block.idtype)).any())


# ---------------------------------------------------------------------------- builders
@pytest.mark.parametrize("as_list", [False, True])
@pytest.mark.parametrize("idtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("kind", KINDS)
def test_builders_leave_out_excluded_edges(kind, num_layers, idtype, as_list):
    g, seeds, excluded = _setup(idtype)
    given = excluded.tolist() if as_list else excluded
    result = _build(kind, g, seeds, num_layers, exclude_eids=given)
    check_contract(g, *result)
    _assert_excluded(result[2], excluded)
    # Identical to the same call on the graph without the excluded edges.
    g2 = _without(g, excluded)
    _assert_same_blocks(g2, result, _build(kind, g2, seeds, num_layers))


@pytest.mark.parametrize("kind", KINDS)
def test_first_hop_is_the_unexcluded_one_minus_the_excluded_ids(kind):
    """The batch's block keeps every in-edge it holds without exclusion, except ``E``."""
    g, seeds, excluded = _setup()
    plain = _build(kind, g, seeds)[2][-1].edata[EID]
    kept = _build(kind, g, seeds, exclude_eids=excluded)[2][-1].edata[EID]
    assert kept.numel() < plain.numel()
    assert torch.equal(kept, plain[~torch.isin(plain, excluded)])


def test_cv_degrees_are_those_without_the_excluded_edges():
    g, seeds, excluded = _setup()
    _, _, blocks = _build("cv", g, seeds, exclude_eids=excluded)
    last = blocks[-1]
    degree = _without(g, excluded).in_degrees(seeds).float()
    dst = last.edges()[1].long()
    torch.testing.assert_close(last.edata[dgl_mvs.keys.HISTORY_WEIGHTS], 1.0 / degree[dst])
    sampled = last.edata[dgl_mvs.keys.SAMPLED]
    per_dst = torch.bincount(dst[sampled], minlength=seeds.numel()).float()
    assert torch.equal(per_dst, degree.clamp(max=2))


@pytest.mark.parametrize("kind", KINDS)
def test_empty_or_none_exclusion_changes_nothing(kind):
    g, seeds, _ = _setup()
    reference = _build(kind, g, seeds)
    for empty in (None, [], torch.tensor([], dtype=torch.int64)):
        _assert_same_blocks(_without(g, torch.tensor([], dtype=torch.int64)),
                            _build(kind, g, seeds, exclude_eids=empty), reference)


def test_edge_weights_follow_the_kept_edges():
    g, seeds, excluded = _setup()
    g.edata["w"] = dgl_mvs.gcn_norm(g)
    for kind in ("history", "exact"):
        _, _, blocks = _build(kind, g, seeds, edge_weight="w", exclude_eids=excluded)
        for block in blocks:
            torch.testing.assert_close(block.edata["edge_weights"], g.edata["w"][block.edata[EID]])


@pytest.mark.parametrize("kind", KINDS)
def test_bad_exclude_ids_raise(kind):
    g, seeds, _ = _setup()
    for bad in ([-1], torch.tensor([0, g.num_edges()]), torch.tensor([g.num_edges() + 5])):
        with pytest.raises(ValueError, match="exclude_eids"):
            _build(kind, g, seeds, exclude_eids=bad)
        with pytest.raises(ValueError, match="exclude_eids"):
            _sampler(kind).sample(g, seeds, torch.as_tensor(bad))
    with pytest.raises(TypeError, match="exclude_eids"):
        _build(kind, g, seeds, exclude_eids=torch.tensor([0.5]))
    with pytest.raises(ValueError, match="exclude_eids"):
        _build(kind, g, seeds, exclude_eids=torch.zeros(2, 2, dtype=torch.int64))


# ---------------------------------------------------------------------------- samplers
@pytest.mark.parametrize("kind", KINDS)
def test_samplers_pass_exclude_eids_through(kind):
    g, seeds, excluded = _setup()
    g2 = _without(g, excluded)
    sampler = _sampler(kind)
    torch.manual_seed(0)  # ControlVariateSampler draws from the global generator
    result = sampler.sample(g, seeds, excluded)
    check_contract(g, *result)
    _assert_excluded(result[2], excluded)
    torch.manual_seed(0)
    _assert_same_blocks(g2, result, sampler.sample(g2, seeds))
    # the keyword form and a one-entry dict (DGL's form when edge IDs come as a dict)
    torch.manual_seed(0)
    keyword = sampler.sample_blocks(g, seeds, exclude_eids={g.canonical_etypes[0]: excluded})
    torch.manual_seed(0)
    _assert_same_blocks(g2, keyword, sampler.sample(g2, seeds))


def _edge_loader(g, sampler, edge_ids, **kwargs):
    sampler = dgl.dataloading.as_edge_prediction_sampler(sampler, **kwargs)
    return dgl.dataloading.DataLoader(g, edge_ids, sampler, batch_size=64, shuffle=False)


@pytest.mark.parametrize("kind", KINDS)
def test_edge_prediction_excludes_self(kind):
    g = random_graph()
    edge_ids = torch.randperm(g.num_edges(), generator=torch.Generator().manual_seed(0))[:320]
    batches = 0
    for input_nodes, pair_graph, blocks in _edge_loader(g, _sampler(kind), edge_ids,
                                                        exclude="self"):
        batch = pair_graph.edata[EID]
        assert batch.numel() == 64
        _assert_excluded(blocks, batch)
        check_contract(g, input_nodes, pair_graph.ndata[NID], blocks)
        # every other in-edge of the pair graph's nodes is still in the last block
        expected = g.in_edges(pair_graph.ndata[NID], form="eid")
        expected = expected[~torch.isin(expected, batch)]
        assert torch.equal(torch.sort(blocks[-1].edata[EID]).values,
                           torch.sort(expected).values)
        batches += 1
    assert batches == 5


def test_edge_prediction_exact_matches_dgl_full_neighbour_sampler():
    """ExactSampler with exclusion holds the same edges as DGL's own full-neighbour sampler."""
    g = random_graph()
    edge_ids = torch.arange(0, g.num_edges(), 7)[:192]
    ours = _edge_loader(g, dgl_mvs.ExactSampler(2), edge_ids, exclude="self")
    dgls = _edge_loader(g, dgl.dataloading.MultiLayerFullNeighborSampler(2), edge_ids,
                        exclude="self")
    for (_, pair, blocks), (_, dgl_pair, dgl_blocks) in zip(ours, dgls):
        assert torch.equal(pair.edata[EID], dgl_pair.edata[EID])
        for block, dgl_block in zip(blocks, dgl_blocks):
            assert torch.equal(torch.sort(block.edata[EID]).values,
                               torch.sort(dgl_block.edata[EID]).values)


@pytest.mark.parametrize("kind", KINDS)
def test_edge_prediction_excludes_reverse_id(kind):
    base = random_graph(num_edges=1500)
    num = base.num_edges()
    g = dgl.add_reverse_edges(base)  # edge i + num is the reverse of edge i
    reverse_eids = torch.cat([torch.arange(num, 2 * num), torch.arange(0, num)])
    assert torch.equal(g.find_edges(reverse_eids)[0], g.find_edges(torch.arange(2 * num))[1])
    edge_ids = torch.randperm(num, generator=torch.Generator().manual_seed(0))[:256]
    loader = _edge_loader(g, _sampler(kind), edge_ids, exclude="reverse_id",
                          reverse_eids=reverse_eids)
    batches = 0
    for input_nodes, pair_graph, blocks in loader:
        batch = pair_graph.edata[EID]
        both = torch.cat([batch, reverse_eids[batch]])
        _assert_excluded(blocks, both)
        check_contract(g, input_nodes, pair_graph.ndata[NID], blocks)
        # the exclusion removed something: the reverse edges enter the pair nodes' in-edges
        assert bool(torch.isin(reverse_eids[batch],
                               g.in_edges(pair_graph.ndata[NID], form="eid")).all())
        batches += 1
    assert batches == 4


# ---------------------------------------------------------------------------- exactness
def _sage_model(num_layers=2):
    torch.manual_seed(0)
    return GNN("sage", 12, 16, 5, num_layers).eval()


def test_exact_blocks_with_exclusion_match_full_graph_without_the_edges():
    g, seeds, excluded = _setup()
    model = _sage_model()
    assert all(isinstance(layer, SAGEConv) for layer in model.layers)
    g2 = dgl.remove_edges(g, excluded.unique())
    assert g2.num_nodes() == g.num_nodes()
    input_nodes, output_nodes, blocks = exact_blocks(g, seeds, 2, exclude_eids=excluded)
    with torch.no_grad():
        reference = model([g2, g2], g.ndata["feat"])
        full = model([g, g], g.ndata["feat"])
        out = model(blocks, g.ndata["feat"][input_nodes.long()])
    torch.testing.assert_close(out, reference[output_nodes.long()], atol=TOL, rtol=0)
    # not vacuous: the excluded edges change these outputs
    assert (out - full[output_nodes.long()]).abs().max() > 1e-3


@pytest.mark.parametrize("kind", ["history", "cv"])
def test_history_and_cv_with_exclusion_are_exact_for_the_graph_without_the_edges(kind):
    """With histories exact on ``g - E``, history and CV blocks built with ``E`` excluded give
    the full-graph forward of ``g - E`` (CV: the degrees are those without ``E``)."""
    g, seeds, excluded = _setup()
    torch.manual_seed(0)
    model = GNN("sage" if kind == "history" else "cvsage", 12, 16, 5, 2).eval()
    g2 = dgl.remove_edges(g, excluded.unique())
    history = dgl_mvs.History(g2, [16])  # histories by node ID, shared with g
    history.attach(model.layers)
    with torch.no_grad():
        reference = history.refresh(model, "feat", chunk_size=97)
        input_nodes, output_nodes, blocks = _build(kind, g, seeds, exclude_eids=excluded)
        out = model(blocks, g.ndata["feat"][input_nodes.long()])
    torch.testing.assert_close(out, reference[output_nodes.long()], atol=TOL, rtol=0)
