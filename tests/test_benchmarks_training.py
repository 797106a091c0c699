"""The baselines of benchmarks/bench_training.py and the NeighborSampler sweep, on small graphs."""
import json
import sys
from pathlib import Path

import dgl
import pytest
import torch

import dgl_mvs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_training  # noqa: E402
import tune_neighbor  # noqa: E402


def _graph(num_nodes=300, num_edges=3000, seed=0):
    gen = torch.Generator().manual_seed(seed)
    g = dgl.graph((torch.randint(0, num_nodes, (num_edges,), generator=gen),
                   torch.randint(0, num_nodes, (num_edges,), generator=gen)),
                  num_nodes=num_nodes)
    g = dgl.to_simple(dgl.remove_self_loop(g))
    g.ndata["feat"] = torch.randn(num_nodes, 8, generator=gen)
    g.ndata["label"] = torch.randint(0, 3, (num_nodes,), generator=gen)
    split = torch.randperm(num_nodes, generator=gen)
    for key, part in zip(("train_mask", "val_mask", "test_mask"), split.tensor_split(3)):
        g.ndata[key] = torch.zeros(num_nodes, dtype=torch.bool)
        g.ndata[key][part] = True
    return g


def test_sampled_gcn_weights_exact_on_full_blocks_unbiased_on_sampled():
    torch.manual_seed(0)  # a fixed x: the tolerance below is a few standard errors of it
    g = bench_training._for_model(_graph(), "gcn-ew")
    out_deg, in_deg = g.out_degrees().float(), g.in_degrees().float()
    seeds = torch.arange(40)
    full = dgl.dataloading.MultiLayerFullNeighborSampler(1)
    _, _, (block,) = full.sample_blocks(g, seeds)
    weights = bench_training.sampled_gcn_weights(block, out_deg, in_deg)
    torch.testing.assert_close(weights, g.edata[bench_training.GCN_WEIGHT][block.edata[dgl.EID]])
    # Sampled blocks: the mean over draws of the weighted sum is the full-graph aggregation.
    x = torch.randn(g.num_nodes(), 4)
    with g.local_scope():
        g.ndata["x"], g.edata["w"] = x, g.edata[bench_training.GCN_WEIGHT]
        g.update_all(dgl.function.u_mul_e("x", "w", "m"), dgl.function.sum("m", "h"))
        exact = g.ndata["h"][seeds]
    sampler = dgl.dataloading.NeighborSampler([3])
    total = torch.zeros(seeds.numel(), 4)
    draws = 600
    dgl.seed(0)
    for _ in range(draws):
        _, _, (block,) = sampler.sample_blocks(g, seeds)
        block.edata["w"] = bench_training.sampled_gcn_weights(block, out_deg, in_deg)
        block.srcdata["x"] = x[block.srcdata[dgl.NID]]
        block.update_all(dgl.function.u_mul_e("x", "w", "m"), dgl.function.sum("m", "h"))
        total += block.dstdata["h"]
    torch.testing.assert_close(total / draws, exact, atol=0.08, rtol=0)


def test_sign_features_are_mean_powers():
    g = _graph()
    x = g.ndata["feat"]
    src, dst = g.edges()
    adj = torch.zeros(g.num_nodes(), g.num_nodes())
    adj[dst, src] = 1.0
    mean = adj / adj.sum(1, keepdim=True).clamp(min=1)
    expected = torch.cat([x, mean @ x, mean @ (mean @ x)], dim=1)
    torch.testing.assert_close(bench_training.sign_features(g), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("sampler,model", [("gb-labor", "sage"), ("gb-neighbor", "gcn-ew"),
                                           ("sign", "sage"), ("neighbor", "gcn-ew"),
                                           ("mvs", "gcn-ew")])
def test_baselines_train(sampler, model):
    g = bench_training._for_model(_graph(), model)
    args = bench_training.parse_args(["--epochs", "2", "--lr", "0.01", "--no-variance",
                                      "--hidden", "16"])
    result = bench_training.run(g, 3, model, sampler, 32, 0, args, "test")
    assert result["steps"] == 2 * 4  # ceil(100 / 32) steps per epoch
    assert result["curve"] and 0.0 <= result["best_val"] <= 1.0
    if sampler == "sign":
        assert result["input_rows_per_step"] == pytest.approx(100 / 4)
    elif sampler.startswith("gb-"):
        assert result["fanouts"] == [10, 10]
        assert result["input_rows_per_step"] > 32


def test_tuned_neighbor_settings(tmp_path):
    runs = []
    for fanouts, lr, val in (([5, 5], 0.01, 0.5), ([10, 10], 0.003, 0.7), ([10, 10], 0.01, 0.6)):
        for seed in (0, 1):
            runs.append({"dataset": "toy", "model": "sage", "fanouts": fanouts, "lr": lr,
                         "seed": seed, "best_val": val + 0.01 * seed, "test_at_best_val": val,
                         "curve": [{"time": 1.0, "val": val + 0.01 * seed}]})
    best = tune_neighbor.best_settings(runs)
    assert best["toy/sage"]["fanouts"] == [10, 10] and best["toy/sage"]["lr"] == 0.003
    assert best["toy/sage"]["best_val"] == pytest.approx(0.705)
    path = tmp_path / "tuned.json"
    path.write_text(json.dumps({"args": {"quick": False}, "runs": runs, "best": best}))
    args = bench_training.parse_args(["--ns-tuned", str(path)])
    assert bench_training.ns_settings(args, "toy", "sage", "neighbor") == ([10, 10], 0.003)
    assert bench_training.ns_settings(args, "toy", "sage", "labor") == ([10, 10], args.lr)
    with pytest.raises(ValueError, match="no tuned settings for toy/gcn-ew"):
        bench_training.ns_settings(args, "toy", "gcn-ew", "neighbor")
    args.quick = True
    with pytest.raises(ValueError, match="without --quick"):
        bench_training.ns_settings(args, "toy", "sage", "neighbor")


def test_gcn_ew_evaluation_matches_weighted_full_graph():
    """Full-graph evaluation of gcn-ew uses the full-graph GCN weights (dgl_mvs.gcn_norm)."""
    g = bench_training._for_model(_graph(), "gcn-ew")
    torch.manual_seed(0)
    model = bench_training.GCNW(8, 16, 3).eval()
    val, test = bench_training.evaluate(model, g)
    ref = dgl.nn.GraphConv(8, 16, norm="both", allow_zero_in_degree=True)
    ref.load_state_dict(model.layers[0].state_dict())
    ref2 = dgl.nn.GraphConv(16, 3, norm="both", allow_zero_in_degree=True)
    ref2.load_state_dict(model.layers[1].state_dict())
    pred = ref2(g, torch.relu(ref(g, g.ndata["feat"]))).argmax(1)
    y = g.ndata["label"]
    assert val == pytest.approx(float((pred[g.ndata["val_mask"]] == y[g.ndata["val_mask"]])
                                      .float().mean()))
    assert dgl_mvs.gcn_norm(g).shape == (g.num_edges(),)


def test_profile_step_phases_and_refreshes():
    """The step profile times every phase and charges refreshes to `refresh`, not `sample`."""
    import profile_step

    g = _graph(num_nodes=400, num_edges=6000)
    train = torch.nonzero(g.ndata["train_mask"]).squeeze(1)
    runners = {name: profile_step.Runner(name, g, train, 3, 32)
               for name in ("mvs", "onehop-cv", "neighbor")}
    # A snapshot refresh every 64 seeds (2 steps), so that some fall inside the run.
    runners["onehop-cv"].onehop.refresh_every = 64
    for _ in range(6):
        for runner in runners.values():
            runner.step(record=True)
    for name, runner in runners.items():
        assert all(len(runner.times[p]) == 6 for p in profile_step.PHASES if p != "refresh")
        assert min(runner.times["forward"]) > 0 and min(runner.times["sample"]) > 0
        assert len(runner.rows) == 6
    cv = runners["onehop-cv"]
    assert len(cv.refreshes["snapshot"]) >= 2  # every 64 seeds, in `sample`
    assert max(cv.times["sample"]) < min(cv.refreshes["snapshot"])  # not charged to sample
    assert cv.amortised_refresh()["snapshot_every_steps"] == 2
    assert runners["mvs"].times["draw"][0] > 0
    assert runners["neighbor"].amortised_refresh() == {}
    assert "score" in runners["mvs"].amortised_refresh()  # timed once if none ran
