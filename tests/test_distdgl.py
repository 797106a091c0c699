"""DistMVSSampler on DistDGL: a 2-partition graph, 2 machines simulated on this host.

``dgl.distributed.partition_graph`` cuts a generated graph in two; ``dgl_mvs.local_cluster``
runs one DGL graph server and one trainer per partition over 127.0.0.1 (each machine with its
own ``/dev/shm``), and ``tests/distdgl_trainer.py`` trains with DDP, saves and resumes, and
draws from fixed scores.  The tests check the results the trainers wrote.
"""
import math
import os
import sys

import dgl
import pytest
import torch

from dgl_mvs.distgraph import add_aggregates
from dgl_mvs.local_cluster import namespace_prefix, run_local_cluster
from dgl_mvs.probabilities import mvs_probabilities
from distdgl_trainer import B, EPOCHS, RESUME_AT, SAGE, STAT_STEPS, stat_scores

pytestmark = pytest.mark.slow  # about 30-60 s: two servers and two trainers
PARTS = 2  # partitions = simulated machines
NUM_NODES, NUM_TRAIN = 600, 300


def learnable_graph(seed=0):
    """A random graph whose labels follow the mean of the neighbours' features."""
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(0, NUM_NODES, (6000,), generator=gen)
    dst = torch.randint(0, NUM_NODES, (6000,), generator=gen)
    g = dgl.to_simple(dgl.graph((src, dst), num_nodes=NUM_NODES))
    g = dgl.remove_self_loop(g)
    feat = torch.randn(NUM_NODES, 8, generator=gen)
    g.ndata["feat"] = feat
    with g.local_scope():
        g.update_all(dgl.function.copy_u("feat", "m"), dgl.function.mean("m", "h"))
        mixed = g.ndata["h"] + feat
    g.ndata["label"] = (mixed @ torch.randn(8, 5, generator=gen)).argmax(1)
    mask = torch.zeros(NUM_NODES, dtype=torch.bool)
    mask[torch.randperm(NUM_NODES, generator=gen)[:NUM_TRAIN]] = True
    g.ndata["train_mask"] = mask
    return g


@pytest.fixture(scope="module", params=[1, 2], ids=["1-trainer-per-machine",
                                                    "2-trainers-per-machine"])
def trainers(request, tmp_path_factory):
    """Every trainer's results; with 2 per machine, a partition's trainers share its draw."""
    try:
        namespace_prefix()
    except RuntimeError as err:
        pytest.skip(str(err))
    tmp = tmp_path_factory.mktemp("distdgl")
    g = learnable_graph()
    add_aggregates(g, SAGE(8, 32, 5))  # for the one-hop blocks
    orig, _ = dgl.distributed.partition_graph(g, "graph", PARTS, str(tmp / "parts"),
                                              balance_ntypes=g.ndata["train_mask"],
                                              return_mapping=True)
    out = tmp / "out"
    out.mkdir()
    script = os.path.join(os.path.dirname(__file__), "distdgl_trainer.py")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(  # this checkout's dgl_mvs
        [root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    codes = run_local_cluster(str(tmp / "parts" / "graph.json"),
                              [sys.executable, script, str(out)], timeout=400, env=env,
                              trainers_per_machine=request.param)
    assert codes == [0] * PARTS, codes
    results = [torch.load(out / f"rank{r}.pt") for r in range(PARTS * request.param)]
    for r in results:
        r["orig"] = orig  # partitioned ID -> ID in learnable_graph()
    return results


def test_trainers_draw_in_lockstep_from_their_own_partitions(trainers):
    R = len(trainers)
    steps_per_epoch = math.ceil(NUM_TRAIN / (R * B))
    runs = [t["head"] + t["tail"] for t in trainers]
    for run in runs:
        assert [r[0] for r in run] == list(range(EPOCHS * steps_per_epoch))
    # ranks are numbered machine by machine, as DGL's launch.py does
    assert [t["partition"] for t in trainers] == [r * PARTS // R for r in range(R)]
    train = trainers[0]["train"]
    assert torch.equal(torch.unique(torch.cat([t["local"] for t in trainers])), train)
    for step in range(EPOCHS * steps_per_epoch):
        shares = [run[step][1] for run in runs]
        for t, seeds in zip(trainers, shares):  # local seeds only
            assert bool(torch.isin(seeds, t["local"]).all())
        union = torch.cat(shares)
        assert torch.unique(union).numel() == union.numel()
        assert abs(union.numel() - R * B) <= PARTS  # each partition rounds its sum of p
        for part in range(PARTS):  # a partition's trainers split its draw evenly
            sizes = [seeds.numel() for t, seeds in zip(trainers, shares)
                     if t["partition"] == part]
            assert max(sizes) - min(sizes) <= 1


def test_probabilities_are_global_and_identical(trainers):
    R = len(trainers)
    for t in trainers[1:]:
        assert torch.equal(trainers[0]["p"], t["p"])
        assert torch.equal(trainers[0]["table"], t["table"])
        assert torch.equal(trainers[0]["stat_p"], t["stat_p"])
    assert float((trainers[0]["table"] > 0).double().mean()) > 0.8  # most nodes scored
    train = trainers[0]["train"]
    p = trainers[0]["stat_p"]
    # exactly what one sampler of R * B seeds computes from the whole table
    expected = mvs_probabilities(stat_scores(train).float().double(), R * B, uniform_mix=0.25)
    torch.testing.assert_close(p, expected)
    # weights R / (p_i n) with the trainers' p of the step's interval (the last interval's here)
    last = [t["tail"][-1] for t in trainers]
    for (_, seeds, w, _), t in zip(last, trainers):
        pos = torch.searchsorted(train, seeds)
        torch.testing.assert_close(w, (R / (t["p"][pos] * NUM_TRAIN)).float())


def test_inclusion_frequencies_match_p(trainers):
    """Counts over S steps are Binomial(S, p_i): chi-square against p, and against uniform."""
    R = len(trainers)
    train = trainers[0]["train"]
    p = trainers[0]["stat_p"]
    seeds = torch.cat([torch.cat(t["stat_draws"]) for t in trainers])
    counts = torch.bincount(torch.searchsorted(train, seeds), minlength=train.numel()).double()

    def chi_square(q):
        sure = q >= 1.0
        assert torch.equal(counts[sure], torch.full_like(counts[sure], STAT_STEPS))
        q = q[~sure]
        z = (counts[~sure] - STAT_STEPS * q) / torch.sqrt(STAT_STEPS * q * (1 - q))
        return float((z**2).sum()), int((~sure).sum())

    chi2, dof = chi_square(p)
    assert chi2 < dof + 6 * math.sqrt(2 * dof), chi2
    uniform = torch.full_like(p, R * B / train.numel())
    assert chi_square(uniform)[0] > 10 * (dof + 6 * math.sqrt(2 * dof))


def test_resume_gives_the_uninterrupted_steps(trainers):
    """Every later step is the uninterrupted run's: the same seeds, weights and loss.

    Equal to float rounding, not bit for bit: DGL's distributed sampling assembles a block
    from the servers' replies in arrival order, so sums over neighbours can round differently.
    (With a fanout the servers' random state, which no client controls, would also pick other
    neighbours: the test uses all of them.)
    """
    for t in trainers:
        assert len(t["head"]) == RESUME_AT
        assert [r[0] for r in t["resumed"]] == [r[0] for r in t["tail"]]
        for (_, seeds, w, loss), (_, seeds2, w2, loss2) in zip(t["tail"], t["resumed"]):
            assert torch.equal(seeds, seeds2)
            torch.testing.assert_close(w, w2, rtol=1e-4, atol=0)
            assert loss2 == pytest.approx(loss, rel=1e-4)


def test_one_hop_blocks_are_exact_on_the_distgraph(trainers):
    """DistOneHopSampler's blocks give DGL's full-graph forward of the same model."""
    g = learnable_graph()
    for t in trainers:
        model = SAGE(8, 32, 5)
        model.load_state_dict(t["model"])
        with torch.no_grad():
            full = model([g, g], g.ndata["feat"])
        expected = full[t["orig"][t["probe"]]]
        torch.testing.assert_close(t["onehop_out"], expected, rtol=1e-4, atol=1e-5)
        assert len(t["onehop_steps"]) == 2 and min(t["onehop_steps"]) > 0


def test_the_model_learns(trainers):
    R = len(trainers)
    for key in ("accuracy", "sampled_accuracy"):  # all neighbours; a fanout of 5
        assert len({t[key] for t in trainers}) == 1  # DDP replicas
        assert trainers[0][key] > 0.5, key  # 5 classes
    steps_per_epoch = math.ceil(NUM_TRAIN / (R * B))
    for t in trainers:
        assert [r[0] for r in t["sampled_run"]] == list(range(EPOCHS * steps_per_epoch))
        assert 0 < t["max_in"] <= 5  # DGL's distributed neighbour sampling with fanout 5


STANDALONE_CHECKS = r'''
import os, sys, torch, dgl, pytest
os.environ["DGL_DIST_MODE"] = "standalone"
import dgl_mvs
part_config = sys.argv[1]
dgl.distributed.initialize("unused_ip_config.txt")
g = dgl.distributed.DistGraph("graph", part_config=part_config)
blocks = dgl.dataloading.NeighborSampler([3, 3])
every = torch.arange(g.num_nodes())
mask = g.ndata["train_mask"][every]
assert mask.dtype == torch.uint8  # how DistDGL stores a boolean mask
with pytest.raises(ValueError, match="uint8"):
    dgl_mvs.DistMVSSampler(g, mask, 8, blocks)
with pytest.raises(TypeError, match="DistGraph"):
    dgl_mvs.DistMVSSampler(dgl.rand_graph(10, 20), torch.arange(5), 2, blocks)
with pytest.raises(TypeError, match="BlockSampler"):
    dgl_mvs.DistMVSSampler(g, mask.bool(), 8, "neighbor")
with pytest.raises(ValueError, match="more than the"):
    dgl_mvs.DistMVSSampler(g, mask.bool(), 10**6, blocks)
with pytest.raises(ValueError, match="lie in"):
    dgl_mvs.DistMVSSampler(g, torch.tensor([0, g.num_nodes()]), 1, blocks)
with pytest.raises(ValueError, match="batch_size"):
    dgl_mvs.DistMVSSampler(g, mask.bool(), 0, blocks)
sampler = dgl_mvs.DistMVSSampler(g, mask.bool(), 8, blocks, score_name="s1")
# one process, one partition: p sums to B and the draw has B seeds of weight 1 / (p n)
p = sampler.current_probabilities()
assert abs(float(p.sum()) - 8) < 1e-6
seeds, w = sampler.draw(0)
assert seeds.numel() == 8 and bool(mask.bool()[seeds].all())
with pytest.raises(ValueError, match="step numbers"):
    sampler.sample_blocks(g, torch.tensor([0, 1]))
with pytest.raises(RuntimeError, match="must not\s+shuffle"):
    sampler.sample_blocks(g, torch.tensor([3]))
_, out, mfgs = sampler.sample_blocks(g, torch.tensor([0]))
for bad, match in ((torch.ones(3), "one score per output node"),
                   (torch.full((out.numel(),), float("nan")), "finite"),
                   (-torch.ones(out.numel()), "non-negative")):
    with pytest.raises(ValueError, match=match):
        sampler.update_scores(mfgs, bad)
assert int((sampler.scores[every] > 0).sum()) == 0  # nothing was written
sampler.update_scores(mfgs, torch.ones(out.numel()))
with pytest.raises(ValueError, match="expected step 1"):
    sampler.update_scores(mfgs, torch.ones(out.numel()))
state = sampler.state_dict()
other = dgl_mvs.DistMVSSampler(g, mask.bool(), 4, blocks, score_name="s2")
with pytest.raises(ValueError, match="same arguments"):
    other.load_state_dict(state)
print("standalone checks passed")
dgl.distributed.exit_client()
'''


def test_errors_in_standalone_mode(tmp_path):
    """Bad input is refused with a clear error (DistDGL's standalone mode: one partition, one
    process, no servers; run in a subprocess, DGL's distributed state is process-wide)."""
    import subprocess
    dgl.distributed.partition_graph(learnable_graph(), "graph", 1, str(tmp_path))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, DGLBACKEND="pytorch", PYTHONPATH=root)
    done = subprocess.run([sys.executable, "-c", STANDALONE_CHECKS,
                           str(tmp_path / "graph.json")], env=env, capture_output=True,
                          text=True, timeout=300, cwd=str(tmp_path))
    assert "standalone checks passed" in done.stdout, done.stdout[-2000:] + done.stderr[-3000:]


def test_a_failed_machine_stops_the_whole_job(tmp_path):
    """A trainer that fails ends the job at once: no process waits for it in a collective."""
    import time
    try:
        namespace_prefix()
    except RuntimeError as err:
        pytest.skip(str(err))
    dgl.distributed.partition_graph(learnable_graph(), "graph", PARTS, str(tmp_path))
    # rank 0 fails at once; rank 1 would wait ten minutes for it
    command = [sys.executable, "-c",
               "import os, sys, time; rank = int(os.environ['RANK']); "
               "sys.exit(3) if rank == 0 else time.sleep(600)"]
    tick = time.monotonic()
    codes = run_local_cluster(str(tmp_path / "graph.json"), command, timeout=300)
    assert codes[0] == 3 and codes[1] != 0, codes
    assert time.monotonic() - tick < 60
