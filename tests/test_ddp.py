"""MVSSampler across data-parallel ranks (gloo, 2 and 4 processes on this machine).

Every rank draws the same global sample of ``R * B`` seeds and keeps a disjoint share; the
ranks exchange their score rows after each step.  The union of the ranks' seeds must then be
exactly what one sampler of batch size ``R * B`` draws, step by step, with the same weights
(times ``R``: DDP averages the ranks' gradients), and the score tables (and histories) must
stay identical.  Each world size spawns its ranks once (module fixture ``ranks``); every
scenario runs in that one job and the tests check its results.
"""
import math
import os
import time

import dgl
import pytest
import torch

import dgl_mvs
from dgl_mvs.probabilities import mvs_probabilities
from conftest import random_graph
from models import GNN
from ranks import init_rank, spawn_ranks

pytestmark = pytest.mark.slow  # each world size spawns its ranks once (about 10-30 s)

WEIGHT, STEP = dgl_mvs.keys.WEIGHT, dgl_mvs.keys.STEP
B = 8  # seeds per rank and step
NUM_TRAIN = 200
STEPS = 24  # global steps of the DataLoader runs
RESUME_AT = 10  # steps before a state is saved and loaded into a new sampler
STAT_STEPS = 2000  # draws of the statistical check
KINDS = ("onehop", "poisson", "dgl", "history")
STAT_B = 24  # seeds per rank there: p large enough to tell the schemes apart (see the test)


def node_scores(nodes):
    """Deterministic, skewed scores: the same for every run and process."""
    return (nodes.double() * 7919 % 101) / 10 + 0.05


def stat_scores(nodes):
    """More skewed scores for the statistical check."""
    return node_scores(nodes) ** 2


def make_model():
    torch.manual_seed(0)  # the same weights on every rank and in the single-process run
    return GNN("sage", 12, 16, 5, 2)


def make_sampler(g, kind, batch_size, steps, seed=0, **kwargs):
    """A sampler of the kind under test; ``steps`` global steps per epoch on every rank."""
    _, world_size = dgl_mvs.distributed.process_group_place()
    options = dict(steps_per_epoch=steps * world_size, seed=seed,
                   prefetch_node_feats=["feat"], prefetch_labels=["label"])
    if kind in ("onehop", "poisson"):  # poisson: random sizes, shares of unequal length
        options.update(model=make_model(), score_every=5,
                       draw="poisson" if kind == "poisson" else "systematic")
    elif kind == "history":  # history blocks, with histories that the ranks exchange
        model = make_model()
        dgl_mvs.History(g, [16]).attach(model.layers)
        options.update(model=model, block_sampler="history", num_layers=2, checkpoint_every=4)
    else:  # a DGL block sampler: the history schedule, checkpoint steps on a shared pool
        options.update(block_sampler=dgl.dataloading.NeighborSampler([3, 3]), num_layers=2,
                       checkpoint_every=4)
    options.update(kwargs)
    return dgl_mvs.MVSSampler(g, torch.arange(NUM_TRAIN), batch_size, **options)


def run(g, sampler, use_ddp, stop=None, **loader_kwargs):
    """(step, seeds, weights) of every batch of one epoch, feeding node_scores back."""
    loader = dgl.dataloading.DataLoader(g, sampler.step_ids(), sampler, use_ddp=use_ddp,
                                        **loader_kwargs)
    out = []
    for _, output_nodes, blocks in loader:
        out.append((int(blocks[-1].dstdata[STEP][0]), output_nodes.clone(),
                    blocks[-1].dstdata[WEIGHT].double().clone()))
        if sampler.block_kind == "history":  # the forward pushes the batch's histories
            with torch.no_grad():
                sampler.model(blocks, blocks[0].srcdata["feat"])
        sampler.update_scores(blocks, node_scores(output_nodes))
        if stop is not None and len(out) == stop:
            break
    return out


def table(sampler):
    """Scores, written mask, and (history blocks) the history of layer 1 and its clocks."""
    g = sampler.g
    history = ((g.ndata["mvs_hist_1"].clone(), g.ndata["mvs_hist_clock_1"].clone())
               if "mvs_hist_1" in g.ndata else None)
    return sampler.scores.values.clone(), sampler.scores.written().clone(), history


def _worker(rank, world_size, init_file, out_dir):
    init_rank(rank, world_size, init_file)
    result = {}
    for kind in KINDS:
        g = random_graph()
        sampler = make_sampler(g, kind, B, STEPS)
        assert sampler.global_batch_size == B * world_size
        batches = run(g, sampler, use_ddp=True)
        # Resume: a state saved after RESUME_AT steps, loaded into a fresh sampler.
        g2 = random_graph()
        first = make_sampler(g2, kind, B, STEPS)
        resumed = run(g2, first, use_ddp=True, stop=RESUME_AT)
        g3 = random_graph()
        second = make_sampler(g3, kind, B, STEPS)
        second.load_state_dict(first.state_dict())
        second.set_epoch(second.epoch)
        resumed += run(g3, second, use_ddp=True)
        result[kind] = {"batches": batches, "table": table(sampler), "resumed": resumed,
                        "resumed_table": table(second)}

    # DataLoader workers draw ahead: the one-hop probabilities of each interval are published
    # by the training process, and the workers of all ranks draw from them.
    g = random_graph()
    sampler = make_sampler(g, "onehop", B, STEPS)
    # (Forked as under torchrun: processes started by spawn default to spawned workers.)
    batches = run(g, sampler, use_ddp=True, num_workers=1, multiprocessing_context="fork")
    result["workers"] = {"batches": batches,
                         "table": table(sampler)}

    # Statistical check: fixed skewed scores, many draws through the sampler's own path.
    g = random_graph()
    sampler = make_sampler(g, "onehop", STAT_B, STAT_STEPS, seed=1, score_every=0,
                           uniform_mix=0.25)
    train = torch.arange(NUM_TRAIN)
    sampler.scores.write(train, stat_scores(train))
    seeds, weights = [], []
    for step in range(STAT_STEPS):
        global_seeds, global_weights = sampler._draw_step(step)
        mine, w, _ = sampler._rank_share(step, global_seeds, global_weights)
        seeds.append(mine)
        weights.append(w)
    result["stat"] = {"seeds": torch.stack(seeds), "weights": torch.stack(weights),
                      "probs": sampler.current_probabilities()}

    # Ranks built with different arguments are refused at construction, on every rank.
    try:
        make_sampler(random_graph(), "onehop", B * (1 + rank), STEPS)
        result["arguments"] = None
    except ValueError as err:
        result["arguments"] = str(err)
    # Ranks whose draws differ anyway (here: seeds changed after construction) are refused.
    g = random_graph()
    sampler = make_sampler(g, "onehop", B, STEPS)
    sampler.schedule.seed = 100 + rank
    loader = dgl.dataloading.DataLoader(g, sampler.step_ids(), sampler, use_ddp=True)
    _, output_nodes, blocks = next(iter(loader))
    try:
        sampler.update_scores(blocks, node_scores(output_nodes))
        result["mismatch"] = None
    except RuntimeError as err:
        result["mismatch"] = str(err)
    torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    torch.distributed.destroy_process_group()


@pytest.fixture(scope="module", params=[2, 4], ids=["R2", "R4"])
def ranks(request, tmp_path_factory):
    """Results of every rank of one gloo job of ``R`` processes, and ``R``."""
    world_size = request.param
    tmp = tmp_path_factory.mktemp(f"ddp{world_size}")
    spawn_ranks(_worker, world_size, (world_size, str(tmp / "init"), str(tmp)))
    return [torch.load(tmp / f"rank{r}.pt") for r in range(world_size)], world_size


@pytest.fixture(scope="module")
def single():
    """One process, batch size R * B: what the ranks together must reproduce."""
    cache = {}

    def get(kind, world_size):
        if (kind, world_size) not in cache:
            g = random_graph()
            sampler = make_sampler(g, kind, B * world_size, STEPS)
            cache[kind, world_size] = run(g, sampler, use_ddp=False), table(sampler)
        return cache[kind, world_size]
    return get


@pytest.mark.parametrize("kind", KINDS)
def test_union_of_ranks_is_the_single_sampler_draw(ranks, single, kind):
    results, world_size = ranks
    expected, _ = single(kind, world_size)
    per_rank = [r[kind]["batches"] for r in results]
    assert all(len(b) == STEPS for b in per_rank)
    for step, (single_step, single_seeds, single_weights) in enumerate(expected):
        assert single_step == step
        shares = [b[step] for b in per_rank]
        assert all(s[0] == step for s in shares)  # lockstep: every rank at the same step
        seeds = torch.cat([s[1] for s in shares])
        weights = torch.cat([s[2] for s in shares])
        # (c) disjoint shares of (almost) equal size; a checkpoint step shares out its pool
        assert torch.unique(seeds).numel() == seeds.numel()
        sizes = [s[1].numel() for s in shares]
        assert max(sizes) - min(sizes) <= 1
        if kind == "onehop" or kind != "poisson" and step % 4 != 0:
            assert sizes == [B] * world_size
        # the union is exactly the single sampler's draw, with R times its weights
        order = torch.argsort(seeds)
        assert torch.equal(seeds[order], torch.sort(single_seeds).values)
        single_order = torch.argsort(single_seeds)
        torch.testing.assert_close(weights[order], world_size * single_weights[single_order])


@pytest.mark.parametrize("kind", KINDS)
def test_score_tables_identical_on_all_ranks(ranks, single, kind):
    results, world_size = ranks
    _, (single_values, single_written, single_history) = single(kind, world_size)
    for r in results:
        values, written, history = r[kind]["table"]
        # every rank wrote every rank's rows (and, onehop, the split refreshes' rows)
        assert torch.equal(values, results[0][kind]["table"][0])
        assert torch.equal(written, single_written)
        torch.testing.assert_close(values, single_values, rtol=1e-6, atol=1e-7)
        if kind == "history":  # the histories too: identical, and the single process's
            hist, clock = history
            assert torch.equal(hist, results[0][kind]["table"][2][0])
            assert torch.equal(clock, single_history[1])
            assert int((clock >= 0).sum()) > NUM_TRAIN // 2
            torch.testing.assert_close(hist, single_history[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_resume_per_rank(ranks, kind):
    results, _ = ranks
    for r in results:
        batches, resumed = r[kind]["batches"], r[kind]["resumed"]
        assert [b[0] for b in resumed] == [b[0] for b in batches]
        for (_, seeds, w), (_, seeds2, w2) in zip(batches, resumed):
            assert torch.equal(seeds, seeds2)
            assert torch.equal(w, w2)
        assert torch.equal(r[kind]["resumed_table"][0], r[kind]["table"][0])


def test_inclusion_probabilities_are_the_single_samplers(ranks):
    """Inclusion frequencies of the ranks' union match p of one sampler of R * B seeds.

    Node ``i``'s count over ``S`` steps is Binomial(S, p_i) (each step's draw includes it with
    probability p_i, independently given the interval's shuffle).  The same counts are also
    tested against what independent per-rank draws of B seeds would give,
    ``q_i = 1 - (1 - p_i(B))^R``: that statistic must be far off, so the check has the power to
    tell the two schemes apart.  (The two differ at second order in p, ``q ~ R p(B) -
    C(R, 2) p(B)^2``: with B = 24 of 200 nodes and S = 2000 steps the expected excess of the
    independent scheme's chi-square is about 1,700 for R = 2 and 34,000 for R = 4, against a
    threshold of 320 for the true p.)
    """
    results, world_size = ranks
    steps = STAT_STEPS
    stats = [r["stat"] for r in results]
    probs = stats[0]["probs"]
    for s in stats:
        assert torch.equal(s["probs"], probs)  # identical tables, identical p
    torch.testing.assert_close(probs.sum(), torch.tensor(float(STAT_B * world_size),
                                                         dtype=probs.dtype))
    seeds = torch.cat([s["seeds"] for s in stats], dim=1)  # (steps, R * B)
    # disjoint within every step: the union has R * B distinct nodes
    assert all(torch.unique(row).numel() == STAT_B * world_size for row in seeds)
    counts = torch.bincount(seeds.reshape(-1), minlength=NUM_TRAIN).double()

    def chi_square(p):
        sure = p >= 1.0
        assert torch.equal(counts[sure], torch.full_like(counts[sure], steps))
        p = p[~sure]
        z = (counts[~sure] - steps * p) / torch.sqrt(steps * p * (1 - p))
        return float((z**2).sum()), float(z.abs().max()), int((~sure).sum())

    chi2, zmax, dof = chi_square(probs)
    # chi-square with `dof` (~200) degrees of freedom: mean dof, sd sqrt(2 dof) ~ 20
    assert chi2 < dof + 6 * math.sqrt(2 * dof), chi2
    assert zmax < 5.0, zmax  # P(|z| > 5 for any of 200 nodes) ~ 1e-4

    scores = stat_scores(torch.arange(NUM_TRAIN))
    per_rank = mvs_probabilities(scores, STAT_B, uniform_mix=0.25)
    independent = 1 - (1 - per_rank) ** world_size
    assert not torch.allclose(independent, probs, atol=1e-3)
    q = independent.clamp(max=1 - 1e-12)
    z = (counts - steps * q) / torch.sqrt(steps * q * (1 - q))
    assert float((z**2).sum()) > 3 * (dof + 6 * math.sqrt(2 * dof))

    # (d) the ranks' weighted sums, averaged as DDP averages gradients, are the single
    # sampler's Horvitz-Thompson estimate: unbiased for the mean over the training set.
    x = scores  # any per-node quantity (a loss)
    estimates = sum((s["weights"] * x[s["seeds"]]).sum(1) for s in stats) / world_size
    mean, se = float(estimates.mean()), float(estimates.std()) / math.sqrt(steps)
    assert abs(mean - float(x.mean())) < 4 * se + 1e-9, (mean, float(x.mean()), se)


def test_dataloader_workers_draw_in_lockstep(ranks):
    """With worker processes the ranks still draw one global sample per step (no refusal)."""
    results, world_size = ranks
    per_rank = [r["workers"]["batches"] for r in results]
    for step in range(STEPS):
        seeds = torch.cat([b[step][1] for b in per_rank])
        assert [b[step][0] for b in per_rank] == [step] * world_size
        assert seeds.numel() == B * world_size
        assert torch.unique(seeds).numel() == seeds.numel()
        weights = torch.cat([b[step][2] for b in per_rank])
        assert bool((weights > 0).all())
    for r in results:
        assert torch.equal(r["workers"]["table"][0], results[0]["workers"]["table"][0])


def test_ranks_with_different_draws_are_refused(ranks):
    results, _ = ranks
    for r in results:
        assert r["mismatch"] is not None and "different global samples" in r["mismatch"]


def test_ranks_with_different_arguments_are_refused(ranks):
    results, world_size = ranks
    for r in results:
        assert r["arguments"] is not None, "a rank built the sampler"
        sizes = ", ".join(f"rank {k}: {B * (1 + k)}" for k in range(world_size))
        assert f"batch_size ({sizes})" in r["arguments"]
        assert "same arguments on every rank" in r["arguments"]


# ---------------------------------------------------------------------- faults
FAULT_TIMEOUT = 5.0  # the samplers' ddp_timeout in the fault tests


def _fault_worker(rank, world_size, init_file, out_dir, num_workers):
    """Two ranks train a DDP model; rank 1 skips update_scores at step 3.  Each rank records
    the error it gets and when, then exits (as a training script would)."""
    init_rank(rank, world_size, init_file)
    g = random_graph()
    model = torch.nn.parallel.DistributedDataParallel(make_model())
    sampler = make_sampler(g, "onehop", B, STEPS, model=model, ddp_timeout=FAULT_TIMEOUT)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    workers = dict(num_workers=1, multiprocessing_context="fork") if num_workers else {}
    loader = dgl.dataloading.DataLoader(g, sampler.step_ids(), sampler, use_ddp=True, **workers)
    tick, outcome = time.monotonic(), None
    try:
        for _, output_nodes, blocks in loader:
            step = int(blocks[-1].dstdata[STEP][0])
            logits = model(blocks, blocks[0].srcdata["feat"])
            labels = blocks[-1].dstdata["label"]
            loss = dgl_mvs.training.weighted_loss(blocks, logits, labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if not (rank == 1 and step == 3):
                sampler.update_scores(blocks, dgl_mvs.cross_entropy_grad_norm(logits, labels))
            tick = time.monotonic()
    except Exception as err:  # noqa: BLE001 -- what the rank's user would see
        outcome = (type(err).__name__, str(err), time.monotonic() - tick)
    torch.save(outcome, os.path.join(out_dir, f"fault{rank}.pt"))


@pytest.mark.parametrize("num_workers", [0, 1])
def test_a_rank_that_skips_update_scores_fails_every_rank_soon(tmp_path, num_workers):
    """No hang, no SIGABRT: every rank gets a Python error naming the cause, within seconds.

    Rank 1 skips update_scores at step 3, the last step of an interval.  Rank 0 waits for its
    scores in the exchange: it fails when rank 1 exits, or after ddp_timeout.  Without workers
    rank 1 says so when it draws the next step.  With workers rank 1's worker waits for the
    next interval's probabilities, which only update_scores at step 3 publishes: it raises
    once its training process has stayed out of update_scores for DDP_WORKER_IDLE (40 s),
    with every default."""
    spawn_ranks(_fault_worker, 2, (2, str(tmp_path / "init"), str(tmp_path), num_workers),
                timeout=120)
    outcomes = [torch.load(tmp_path / f"fault{r}.pt") for r in range(2)]
    for name, message, seconds in outcomes:
        assert seconds < 60, (name, message, seconds)
    name, message, seconds = outcomes[0]
    assert name == "ExchangeError" and "exchange of the scores of a step" in message
    assert "every rank must call update_scores after every step" in message
    name, message, seconds = outcomes[1]
    assert name == "RuntimeError"
    if num_workers == 0:
        assert "update_scores was not called for step 3" in message
    else:
        assert "publishes in update_scores at step 3" in message
        assert "has not called update_scores for 40 s" in message
