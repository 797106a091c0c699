"""Training with MVS end to end: it learns, its loss is unbiased, the example runs."""
import sys
from pathlib import Path

import dgl
import pytest
import torch

import dgl_mvs
from dgl_mvs.training import EarlyStopping, metric, per_node_loss, weighted_loss

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import compare_samplers  # noqa: E402


def test_mvs_learns_cora():
    """A few hundred seeded MVS steps of a 2-layer GCN reach >= 0.75 test accuracy on Cora."""
    args = compare_samplers.parse_args([
        "--dataset", "cora", "--model", "gcn", "--sampler", "mvs", "--batch-size", "32",
        "--K", "10", "--epochs", "60", "--patience", "60", "--max-steps", "300",
        "--seed", "0", "--quiet",
    ])
    result = compare_samplers.run(args)
    assert result["steps"] == 300
    assert result["test"] >= 0.75, result["test"]


def test_weighted_loss_is_unbiased_in_the_loop():
    """At fixed parameters, E[sum_i w_i loss_i] over MVS steps equals the pool-mean loss."""
    torch.manual_seed(0)
    ds = dgl_mvs.data.load_dataset("synthetic", num_nodes=1500, avg_degree=8, num_classes=4,
                                   feat_dim=16, seed=0)
    g = ds[0]
    train = torch.nonzero(g.ndata["train_mask"]).squeeze(1)
    model = compare_samplers.GNN("sage", 16, 32, 4, 2, dropout=0.0).eval()
    history = dgl_mvs.History(g, [32])
    history.attach(model.layers)
    sampler = dgl_mvs.MVSSampler(
        g, train, batch_size=24, num_layers=2, block_sampler="history", checkpoint_every=100_000,
        pool_ratio=0.5,
        prefetch_node_feats=["feat"], prefetch_labels=["label"], steps_per_epoch=1201,
    )
    loader = dgl.dataloading.DataLoader(g, sampler.step_ids(), sampler)
    estimates = []
    with torch.no_grad():
        for input_nodes, output_nodes, blocks in loader:
            logits = model(blocks, blocks[0].srcdata["feat"])
            labels = blocks[-1].dstdata["label"]
            loss = weighted_loss(blocks, logits, labels)
            step = int(blocks[-1].dstdata[dgl_mvs.keys.STEP][0])
            if step == 0:  # checkpoint: the exact mean over the pool, histories refreshed
                pool_mean = float(loss)
                pool_losses = per_node_loss(logits, labels)
            else:
                estimates.append(float(loss))
            sampler.update_scores(blocks, dgl_mvs.cross_entropy_grad_norm(logits, labels))
    full = history.refresh(model, "feat")
    pool = sampler._pool(0)
    exact = per_node_loss(full[pool], g.ndata["label"][pool])
    torch.testing.assert_close(pool_losses, exact, atol=1e-5, rtol=0)
    assert abs(pool_mean - float(exact.mean())) < 1e-5
    estimates = torch.tensor(estimates, dtype=torch.float64)
    sem = float(estimates.std()) / len(estimates) ** 0.5
    assert sem > 0
    assert abs(float(estimates.mean()) - pool_mean) < 5 * sem, (estimates.mean(), pool_mean, sem)


@pytest.mark.parametrize("sampler", compare_samplers.SAMPLERS)
def test_example_runs_for_every_sampler(sampler, tmp_path):
    out = tmp_path / "result.json"
    args = compare_samplers.parse_args([
        "--dataset", "synthetic", "--num-nodes", "400", "--avg-degree", "6",
        "--num-classes", "3", "--feat-dim", "8", "--hidden", "16", "--model", "sage",
        "--sampler", sampler, "--batch-size", "32", "--epochs", "2", "--K", "3",
        "--output", str(out), "--quiet",
    ] + (["--plot", str(tmp_path / "curve.png")] if sampler == "mvs" else []))
    result = compare_samplers.run(args)
    assert out.exists()
    assert 0.0 <= result["test"] <= 1.0
    assert result["steps"] > 0 and result["nodes_per_step"] > 0
    if sampler == "mvs":
        assert (tmp_path / "curve.png").stat().st_size > 0


@pytest.mark.parametrize("blocks", ["cv", "exact", "neighbor", "labor"])
def test_example_mvs_block_variants(blocks):
    args = compare_samplers.parse_args([
        "--dataset", "synthetic", "--num-nodes", "400", "--avg-degree", "6",
        "--num-classes", "3", "--feat-dim", "8", "--hidden", "16", "--model", "sage",
        "--sampler", "mvs", "--blocks", blocks, "--fanout", "3", "--batch-size", "32",
        "--epochs", "2", "--K", "3", "--quiet",
    ])
    result = compare_samplers.run(args)
    assert 0.0 <= result["test"] <= 1.0 and result["steps"] > 0


@pytest.mark.parametrize("model,blocks", [("gat", "history"), ("sage", "onehop")])
def test_example_multilabel(model, blocks):
    args = compare_samplers.parse_args([
        "--dataset", "synthetic", "--num-nodes", "300", "--avg-degree", "6", "--multilabel",
        "--num-classes", "3", "--feat-dim", "8", "--hidden", "16", "--model", model,
        "--sampler", "mvs", "--blocks", blocks, "--batch-size", "16", "--epochs", "1",
        "--quiet",
    ])
    result = compare_samplers.run(args)
    assert result["metric"] == "micro_f1" and 0.0 <= result["test"] <= 1.0


def test_example_gat_needs_other_blocks():
    args = compare_samplers.parse_args([
        "--dataset", "synthetic", "--num-nodes", "300", "--model", "gat", "--sampler", "mvs",
        "--epochs", "1", "--quiet",
    ])
    with pytest.raises(ValueError, match="attention.*block_sampler='history'"):
        compare_samplers.run(args)


def test_metric_and_early_stopping():
    logits = torch.tensor([[2.0, -1.0], [-1.0, 3.0], [0.5, -0.5]])
    assert metric(logits, torch.tensor([0, 1, 1])) == pytest.approx(2 / 3)
    truth = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    # predicted positives: (0,0), (1,1), (2,0); true positives: (0,0), (1,1); 4 true labels
    assert metric(logits, truth, multilabel=True) == pytest.approx(2 * 2 / (3 + 3))
    model = torch.nn.Linear(1, 1)
    stopper = EarlyStopping(patience=2, min_delta=0.01)
    assert not stopper.step(0.5, model)
    model.weight.data.fill_(7.0)
    assert not stopper.step(0.505, model)  # not an improvement by min_delta
    assert stopper.step(0.4, model)
    stopper.restore(model)
    assert float(model.weight) != 7.0
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(patience=0)


def test_example_checkpoint_and_resume_match_an_uninterrupted_run(tmp_path):
    base = ["--dataset", "synthetic", "--num-nodes", "400", "--avg-degree", "6",
            "--num-classes", "3", "--feat-dim", "8", "--hidden", "16", "--model", "sage",
            "--sampler", "mvs", "--batch-size", "32", "--K", "4", "--patience", "100",
            "--dropout", "0.2", "--quiet"]
    whole = compare_samplers.run(compare_samplers.parse_args(base + ["--epochs", "5"]))
    ckpt = str(tmp_path / "ckpt.pt")
    part = compare_samplers.parse_args(
        base + ["--epochs", "2", "--save", ckpt, "--save-every", "5"])
    compare_samplers.run(part)
    resumed = compare_samplers.run(compare_samplers.parse_args(
        base + ["--epochs", "5", "--save", ckpt, "--save-every", "1000",
                "--resume"]))
    assert resumed["steps"] == whole["steps"]
    assert [c["loss"] for c in resumed["curve"]] == [c["loss"] for c in whole["curve"]]
    assert resumed["test"] == whole["test"]


def test_example_score_only_checkpoints_leave_the_parameters_alone():
    base = ["--dataset", "synthetic", "--num-nodes", "400", "--avg-degree", "6",
            "--num-classes", "3", "--feat-dim", "8", "--hidden", "16", "--model", "sage",
            "--sampler", "mvs", "--blocks", "history", "--batch-size", "32", "--dropout", "0",
            "--quiet", "--checkpoint-steps", "score"]

    def run(*extra):
        return compare_samplers.run(compare_samplers.parse_args(base + list(extra)))

    # K = 1: every step is a checkpoint, so no step may change the model.
    one, three = run("--K", "1", "--epochs", "1"), run("--K", "1", "--epochs", "3")
    assert three["steps"] == 3 * one["steps"]
    assert three["test"] == one["test"] and three["best_val"] == one["best_val"]
    trained = run("--K", "4", "--epochs", "3")  # ordinary steps between checkpoints do train
    assert trained["best_val"] > one["best_val"]
