"""MVSSampler inside dgl.dataloading.DataLoader: schedule, scores, workers, errors (DDP: test_ddp.py)."""

import dgl
import pytest
import torch
import torch.nn.functional as F

from dgl.nn import SAGEConv

import dgl_mvs
from dgl_mvs.probabilities import mvs_probabilities
from conftest import random_graph
from test_blocks import check_contract

NID = dgl.NID
WEIGHT, STEP = dgl_mvs.keys.WEIGHT, dgl_mvs.keys.STEP


_KEEP = []  # histories stay attached as long as the tests run


def attach_history(g, num_layers=2):
    """History blocks are for models with an attached History: give the graph one."""
    layers = torch.nn.ModuleList([SAGEConv(12, 8, "mean") for _ in range(num_layers)])
    history = dgl_mvs.History(g, [8] * (num_layers - 1))
    history.attach(layers)
    _KEEP.append((history, layers))
    return history


def make_sampler(g, **kwargs):
    options = dict(batch_size=16, num_layers=2, block_sampler="history", checkpoint_every=5,
                   pool_ratio=0.4, seed=0, score_timeout=60.0)
    options.update(kwargs)
    if options.get("block_sampler") in ("history", "cv") \
            and not dgl_mvs.history.attached_histories(g):
        attach_history(g, options["num_layers"] or len(options.get("fanouts") or []))
    return dgl_mvs.MVSSampler(g, torch.arange(200), **options)


def node_scores(nodes):
    """Deterministic, skewed scores: the same for every run and process."""
    return (nodes.double() * 7919 % 101) / 10 + 0.05


def run_epochs(g, sampler, num_epochs=2, **loader_kwargs):
    loader = dgl.dataloading.DataLoader(g, sampler.step_ids(), sampler, **loader_kwargs)
    batches = []
    for epoch in range(num_epochs):
        sampler.set_epoch(epoch)
        for input_nodes, output_nodes, blocks in loader:
            batches.append((input_nodes, output_nodes, blocks))
            sampler.update_scores(blocks, node_scores(output_nodes))
    return batches


def test_schedule_checkpoints_and_batches(graph):
    sampler = make_sampler(graph)
    batches = run_epochs(graph, sampler)
    assert sampler.steps_per_epoch == 13  # ceil(200 / 16)
    steps = [int(b[-1].dstdata[STEP][0]) for _, _, b in batches]
    assert steps == list(range(26))  # in order, the second epoch continuing the first
    for step, (input_nodes, output_nodes, blocks) in zip(steps, batches):
        check_contract(graph, input_nodes, output_nodes, blocks)
        pool = sampler._pool(step // 5)
        assert bool(torch.isin(output_nodes, pool).all())
        weights = blocks[-1].dstdata[WEIGHT]
        assert sampler.is_checkpoint_batch(blocks) == (step % 5 == 0)
        if step % 5 == 0:  # checkpoint: the whole pool, plain mean
            assert torch.equal(torch.sort(output_nodes.long()).values, torch.sort(pool).values)
            torch.testing.assert_close(weights, torch.full_like(weights, 1 / 80))
            assert blocks[0].num_dst_nodes() > blocks[-1].num_dst_nodes()  # exact blocks
        else:  # MVS step: exactly batch_size seeds, history blocks
            assert output_nodes.numel() == 16
            assert blocks[0].num_src_nodes() == blocks[-1].num_src_nodes()
    assert sampler.pool_size == 80


def test_frozen_probabilities_come_from_checkpoint_scores(graph):
    sampler = make_sampler(graph)
    run_epochs(graph, sampler, num_epochs=1)
    interval = int(sampler._frozen_interval[0])
    pool = sampler._pool(interval)
    expected = mvs_probabilities(node_scores(pool), 16)
    torch.testing.assert_close(sampler._frozen_p, expected)
    # HT weights of a drawn step are 1 / (p_i |V_S|)
    seeds, weights = sampler._draw_step(interval * 5 + 1)
    position = {int(n): i for i, n in enumerate(pool)}
    p = expected[[position[int(n)] for n in seeds]]
    torch.testing.assert_close(weights, 1 / (p * 80))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_high_scores_are_always_drawn(graph, num_workers):
    """Scores written by the main process reach the draws, in workers too."""
    sampler = make_sampler(graph, batch_size=12, pool_ratio=1.0, checkpoint_every=4)
    hot = torch.arange(0, 200, 20)  # 10 nodes
    loader = dgl.dataloading.DataLoader(
        graph, sampler.step_ids(), sampler, num_workers=num_workers
    )
    for input_nodes, output_nodes, blocks in loader:
        step = int(blocks[-1].dstdata[STEP][0])
        if step % 4 != 0 and step > 4:
            # p = 1 for the hot nodes (scores far above mu): every MVS batch has them all
            assert bool(torch.isin(hot, output_nodes).all()), step
        scores = torch.where(torch.isin(output_nodes, hot), 1000.0, 1.0)
        sampler.update_scores(blocks, scores)


@pytest.mark.parametrize("loader_kwargs", [
    dict(num_workers=2), dict(num_workers=3, persistent_workers=True)
])
def test_same_seed_same_batches_with_and_without_workers(graph, loader_kwargs):
    reference = [o for _, o, _ in run_epochs(graph, make_sampler(graph))]
    with_workers = [o for _, o, _ in run_epochs(graph, make_sampler(graph), **loader_kwargs)]
    assert len(reference) == len(with_workers)
    for a, b in zip(reference, with_workers):
        assert torch.equal(a, b)
    other_seed = [o for _, o, _ in run_epochs(graph, make_sampler(graph, seed=1))]
    assert any(not torch.equal(a, b) for a, b in zip(reference, other_seed))


def test_epochs_draw_differently(graph):
    batches = run_epochs(graph, make_sampler(graph), num_epochs=2)
    first, second = batches[:13], batches[13:]
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(first, second))


def test_forgetting_set_epoch_warns(graph):
    sampler = make_sampler(graph)
    loader = dgl.dataloading.DataLoader(graph, sampler.step_ids(), sampler)
    with pytest.warns(RuntimeWarning, match="set_epoch"):
        for _ in range(2):
            for _, output_nodes, blocks in loader:
                sampler.update_scores(blocks, node_scores(output_nodes))


@pytest.mark.parametrize("draw", ["systematic", "poisson"])
@pytest.mark.parametrize("probabilities", ["frozen", "step"])
def test_weighted_sum_is_unbiased(graph, draw, probabilities):
    """E[sum_i w_i x_i] over the draws of an interval equals the pool mean of x."""
    sampler = make_sampler(
        graph, checkpoint_every=100_000, draw=draw, probabilities=probabilities, batch_size=10
    )
    pool = sampler._pool(0)
    sampler.scores.write(pool, node_scores(pool))
    if probabilities == "frozen":
        sampler._frozen_p.copy_(mvs_probabilities(node_scores(pool), 10))
        sampler._frozen_interval[0] = 0
    x = torch.sin(pool.double()) + 2.0  # any per-node quantity, e.g. a loss
    position = torch.full((graph.num_nodes(),), -1, dtype=torch.int64)
    position[pool] = torch.arange(pool.numel())
    estimates = []
    for step in range(1, 3001):
        seeds, weights = sampler._draw_step(step)
        estimates.append(float((weights * x[position[seeds]]).sum()))
    estimates = torch.tensor(estimates, dtype=torch.float64)
    sem = estimates.std() / len(estimates) ** 0.5
    assert abs(float(estimates.mean()) - float(x.mean())) < 5 * float(sem)
    assert float(estimates.std()) > 0


def test_step_probabilities_follow_latest_scores(graph):
    sampler = make_sampler(graph, probabilities="step", checkpoint_every=1000, batch_size=8)
    pool = sampler._pool(0)
    target = pool[:8]
    sampler.scores.write(pool, torch.full((80,), 1e-3, dtype=torch.float64))
    sampler.scores.write(target, torch.full((8,), 10.0, dtype=torch.float64))
    seeds, _ = sampler._draw_step(1)
    assert torch.equal(torch.sort(seeds).values, torch.sort(target).values)


@pytest.mark.parametrize("block_sampler", [
    dgl.dataloading.NeighborSampler([4, 4]),
    dgl.dataloading.LaborSampler([4, 4]),
    dgl.dataloading.MultiLayerFullNeighborSampler(2),
])
def test_mvs_seeds_with_stock_block_samplers(graph, block_sampler):
    sampler = make_sampler(graph, block_sampler=block_sampler, num_layers=None)
    for input_nodes, output_nodes, blocks in run_epochs(graph, sampler, num_epochs=1):
        assert len(blocks) == 2
        assert torch.equal(blocks[-1].dstdata[NID], output_nodes)
        assert blocks[-1].dstdata[WEIGHT].shape == output_nodes.shape
        assert torch.equal(blocks[0].srcdata[NID], input_nodes)


def test_cv_sampler_runs(graph):
    sampler = make_sampler(graph, block_sampler="cv", fanouts=[2, 2], num_layers=None)
    for input_nodes, output_nodes, blocks in run_epochs(graph, sampler, num_epochs=1):
        check_contract(graph, input_nodes, output_nodes, blocks)


def test_prefetch_and_edge_weights(graph):
    graph.edata["w"] = dgl_mvs.gcn_norm(graph)
    sampler = make_sampler(
        graph, edge_weight="w", prefetch_node_feats=["feat"], prefetch_labels=["label"]
    )
    loader = dgl.dataloading.DataLoader(graph, sampler.step_ids(), sampler)
    input_nodes, output_nodes, blocks = next(iter(loader))
    torch.testing.assert_close(blocks[0].srcdata["feat"], graph.ndata["feat"][input_nodes])
    assert torch.equal(blocks[-1].dstdata["label"], graph.ndata["label"][output_nodes])
    for block in blocks:
        torch.testing.assert_close(
            block.edata["edge_weights"], graph.edata["w"][block.edata[dgl.EID]]
        )


def test_errors(graph):
    train = torch.arange(200)
    with pytest.raises(ValueError, match="batch_size"):
        dgl_mvs.MVSSampler(graph, train, batch_size=0, num_layers=2)
    with pytest.raises(ValueError, match="batch_size"):
        dgl_mvs.MVSSampler(graph, train, batch_size=2.5, num_layers=2)
    with pytest.warns(RuntimeWarning, match="whole pool"):
        big = dgl_mvs.MVSSampler(graph, train, batch_size=50, num_layers=2,
                                 block_sampler="history", pool_ratio=0.1)
    assert big.batch_size == big.pool_size == 20
    with pytest.raises(ValueError, match="needs num_layers"):
        dgl_mvs.MVSSampler(graph, train, batch_size=10, block_sampler="history")
    with pytest.raises(ValueError, match="pass model=model"):  # the default blocks need it
        dgl_mvs.MVSSampler(graph, train, batch_size=10, num_layers=2)
    layers = torch.nn.ModuleList([SAGEConv(12, 8, "mean"), SAGEConv(8, 3, "mean")])
    with pytest.raises(ValueError, match="need no checkpoint steps"):
        dgl_mvs.MVSSampler(graph, train, batch_size=10, model=layers, checkpoint_every=3,
                           prefetch_node_feats=["feat"])
    with pytest.raises(ValueError, match="prefetch_node_feats"):
        dgl_mvs.MVSSampler(graph, train, batch_size=10, model=layers)
    with pytest.raises(ValueError, match="not its layers"):  # score refreshes run the model
        dgl_mvs.MVSSampler(graph, train, batch_size=10, model=layers,
                           prefetch_node_feats=["feat"])
    assert dgl_mvs.MVSSampler(graph, train, batch_size=10, model=layers, score_every=0,
                              prefetch_node_feats=["feat"]).score_every == 0
    with pytest.raises(ValueError, match="fanouts"):
        dgl_mvs.MVSSampler(graph, train, batch_size=10, block_sampler="cv")
    with pytest.raises(ValueError, match="blocks must be"):
        dgl_mvs.MVSSampler(graph, train, batch_size=10, num_layers=2, block_sampler="magic")
    with pytest.raises(ValueError, match="duplicate"):
        dgl_mvs.MVSSampler(graph, torch.tensor([1, 1, 2]), batch_size=1, num_layers=2,
                           block_sampler="history")
    with pytest.raises(KeyError, match="prefetch_node_feats"):
        dgl_mvs.MVSSampler(graph, train, batch_size=10, num_layers=2, block_sampler="history",
                           prefetch_node_feats=["missing"])
    with pytest.raises(KeyError, match="'missing' is not in g.ndata"):
        dgl_mvs.MVSSampler(graph, train, batch_size=10, model=layers,
                           prefetch_node_feats=["missing"])
    with pytest.raises(KeyError, match="not in g.edata"):
        dgl_mvs.MVSSampler(graph, train, batch_size=10, num_layers=2, block_sampler="history",
                           edge_weight="nope")
    with pytest.raises(KeyError, match="not in g.edata"):
        dgl_mvs.MVSSampler(graph, train, batch_size=10, model=layers, edge_weight="nope",
                           prefetch_node_feats=["feat"])
    hetero = dgl.heterograph({("a", "r", "b"): (torch.tensor([0]), torch.tensor([0]))})
    with pytest.raises(ValueError, match="homogeneous"):
        dgl_mvs.MVSSampler(hetero, torch.tensor([0]), batch_size=1, num_layers=2,
                           block_sampler="history")

    sampler = make_sampler(graph)
    loader = dgl.dataloading.DataLoader(graph, sampler.step_ids(), sampler, batch_size=2)
    with pytest.raises(ValueError, match="batch_size=1"):
        next(iter(loader))
    unscored = make_sampler(graph, score_timeout=0.0)  # workers that start right never wait
    shuffled = dgl.dataloading.DataLoader(
        graph, unscored.step_ids(), unscored, shuffle=True, num_workers=2
    )
    with pytest.raises(ValueError, match="shuffle=False"):
        for _ in range(5):  # some worker receives an index outside its share
            for _ in shuffled:
                pass

    _, output_nodes, blocks = sampler.sample(graph, torch.tensor([0]))
    before = sampler.scores.values.clone()
    bad = node_scores(output_nodes)
    bad[3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        sampler.update_scores(blocks, bad)
    assert torch.equal(sampler.scores.values, before)  # nothing written
    _, _, stock = dgl.dataloading.NeighborSampler([2, 2]).sample(graph, torch.arange(5))
    with pytest.raises(ValueError, match="not produced by MVSSampler"):
        sampler.update_scores(stock, torch.ones(5))
    with pytest.raises(ValueError, match="not produced by MVSSampler"):
        sampler.is_checkpoint_batch(stock)


def test_blocks_argument_is_a_deprecated_alias(graph):
    with pytest.warns(DeprecationWarning, match="block_sampler"):
        sampler = make_sampler(graph, block_sampler="onehop", blocks="exact")
    assert sampler.block_kind == "exact"
    assert isinstance(sampler.block_sampler, dgl_mvs.ExactSampler)


# ---------------------------------------------------------------- checks at construction
# Every refusal names the problem and what to do; each piece of advice is run.
def _sage():
    from models import GNN
    torch.manual_seed(0)
    return GNN("sage", 12, 16, 5, 2)


HOP = dict(prefetch_node_feats=["feat"])


def _one_step(g, sampler, model, label_key="label"):
    """One step of the README's loop, then a score refresh (what read the labels late)."""
    loader = dgl.dataloading.DataLoader(g, sampler.step_ids(), sampler)
    _, output_nodes, blocks = next(iter(loader))
    logits = model(blocks, blocks[0].srcdata["feat"])
    labels = g.ndata[label_key][output_nodes]
    if labels.dim() == 2:
        scores = dgl_mvs.bce_grad_norm(logits.detach(), labels.float())
    else:
        scores = dgl_mvs.cross_entropy_grad_norm(logits.detach(), labels)
    sampler.update_scores(blocks, scores)
    if sampler.score_every:
        sampler.refresh_scores()


def test_labels_under_another_key_are_named_at_construction(graph):
    graph.ndata["y"] = graph.ndata.pop("label")
    model = _sage()
    with pytest.raises(ValueError, match=r"g.ndata\['label'\].*prefetch_labels=\['your_key'\]"
                                         r".*score_every=0"):
        dgl_mvs.MVSSampler(graph, torch.arange(200), 16, model=model, **HOP)
    sampler = dgl_mvs.MVSSampler(graph, torch.arange(200), 16, model=model,
                                 prefetch_labels=["y"], **HOP)
    _one_step(graph, sampler, model, "y")
    assert bool(sampler.scores.written(torch.arange(200)).all())
    sampler = dgl_mvs.MVSSampler(graph, torch.arange(200), 16, model=model, score_every=0,
                                 **HOP)
    _one_step(graph, sampler, model, "y")


def test_multilabel_targets_need_the_flag(graph):
    graph.ndata["label"] = F.one_hot(graph.ndata["label"], 5).float()
    model = _sage()
    with pytest.raises(ValueError, match=r"shape \(400, 5\).*pass multilabel=True"):
        dgl_mvs.MVSSampler(graph, torch.arange(200), 16, model=model, **HOP)
    sampler = dgl_mvs.MVSSampler(graph, torch.arange(200), 16, model=model, multilabel=True,
                                 **HOP)
    _one_step(graph, sampler, model)
    assert bool(sampler.scores.written(torch.arange(200)).all())
    graph.ndata["label"] = graph.ndata["label"].argmax(1)
    with pytest.raises(ValueError, match="multilabel=True needs 2-D labels"):
        dgl_mvs.MVSSampler(graph, torch.arange(200), 16, model=model, multilabel=True, **HOP)


def test_edge_features_are_refused_with_one_hop_blocks(graph):
    graph.edata["w"] = dgl_mvs.gcn_norm(graph)
    model = _sage()
    with pytest.raises(ValueError, match=r"cannot be prefetched.*edge_weight='w'"
                                         r".*NeighborSampler\(\[10, 10\]\)"):
        dgl_mvs.MVSSampler(graph, torch.arange(200), 16, model=model,
                           prefetch_edge_feats=["w"], **HOP)
    dgl_mvs.MVSSampler(graph, torch.arange(200), 16, model=model, edge_weight="w", **HOP)
    sampler = dgl_mvs.MVSSampler(graph, torch.arange(200), 16, model=model, **HOP,
                                 block_sampler=dgl.dataloading.NeighborSampler([10, 10]),
                                 prefetch_edge_feats=["w"])
    _, _, blocks = next(iter(dgl.dataloading.DataLoader(graph, sampler.step_ids(), sampler)))
    assert torch.equal(blocks[0].edata["w"], graph.edata["w"][blocks[0].edata[NID]])


class _PlainSampler(dgl.dataloading.BlockSampler):
    """A user's block sampler that does not tell how many blocks it builds."""

    def sample_blocks(self, g, seed_nodes, exclude_eids=None):
        return dgl.dataloading.MultiLayerFullNeighborSampler(2).sample_blocks(g, seed_nodes)


def test_block_sampler_objects_give_their_layers_and_keep_their_fanouts(graph):
    neighbor = dgl.dataloading.NeighborSampler([4, 4])
    with pytest.raises(ValueError, match=r"fanouts=\[-1, 2\].*give them to it"):
        make_sampler(graph, block_sampler=neighbor, num_layers=None, fanouts=[-1, 2])
    with pytest.raises(ValueError, match=r"num_layers=3.*builds 2 blocks"):
        make_sampler(graph, block_sampler=neighbor, num_layers=3)
    # the number of layers comes from the fanouts: evaluation needs no num_layers
    sampler = make_sampler(graph, block_sampler=neighbor, num_layers=None,
                           prefetch_node_feats=["feat"], prefetch_labels=["label"])
    loader = dgl.dataloading.DataLoader(graph, torch.arange(300, 400),
                                        sampler.evaluation_sampler(), batch_size=50)
    _, _, blocks = next(iter(loader))
    assert len(blocks) == 2 and "label" in blocks[-1].dstdata
    plain = make_sampler(graph, block_sampler=_PlainSampler(), num_layers=None)
    with pytest.raises(ValueError, match="num_layers=L"):
        plain.evaluation_sampler()
    plain = make_sampler(graph, block_sampler=_PlainSampler(), num_layers=2)
    assert plain.evaluation_sampler().fanouts == [-1, -1]


def test_update_scores_twice_for_one_step_is_refused(graph):
    sampler = make_sampler(graph)
    loader = dgl.dataloading.DataLoader(graph, sampler.step_ids(), sampler)
    _, output_nodes, blocks = next(iter(loader))
    sampler.update_scores(blocks, node_scores(output_nodes))
    before = sampler.scores.values.clone()
    with pytest.raises(ValueError, match="already called for step 0: call it once per step"):
        sampler.update_scores(blocks, node_scores(output_nodes) + 1)
    assert torch.equal(sampler.scores.values, before)


def test_gradient_variance_keeps_modes_and_reads_the_samplers_labels(graph):
    graph.ndata["y"] = graph.ndata.pop("label")
    model = _sage()
    model.train()
    model.dropout.eval()  # e.g. a submodule the user froze
    sampler = dgl_mvs.MVSSampler(graph, torch.arange(200), 16, model=model,
                                 prefetch_labels=["y"], **HOP)
    result = dgl_mvs.gradient_variance(sampler, model, repeats=3)
    assert result["realised_ratio"] > 0
    assert model.training and model.layers[0].training and not model.dropout.training
    with pytest.raises(ValueError, match="pass labels='your_key'"):
        dgl_mvs.gradient_variance(sampler, model, labels="label", repeats=3)
