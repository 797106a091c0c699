"""MVSSampler's default (one-hop blocks, importance-sampled seeds) in DGL's DataLoader."""
import math
import os

import dgl
import pytest
import torch
import torch.nn.functional as F

import dgl_mvs
from dgl_mvs.diagnostics import gradient_variance
from conftest import random_graph
from test_onehop import Model

FEATS = dict(prefetch_node_feats=["feat"], prefetch_labels=["label"])


def _train(g, model, sampler, epochs=1, num_workers=0):
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    steps = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        loader = dgl.dataloading.DataLoader(g, sampler.step_ids(), sampler,
                                            num_workers=num_workers)
        for _, output_nodes, blocks in loader:
            logits = model(blocks, blocks[0].srcdata["feat"])
            labels = blocks[-1].dstdata["label"]
            w = blocks[-1].dstdata["mvs_weight"]
            loss = (w * F.cross_entropy(logits, labels, reduction="none")).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sampler.update_scores(blocks, dgl_mvs.cross_entropy_grad_norm(logits, labels))
            steps.append(int(blocks[-1].dstdata["mvs_step"][0]))
    return steps


@pytest.mark.parametrize("num_workers", [0, 2])
def test_default_trains_in_the_dataloader(num_workers):
    g = random_graph()
    torch.manual_seed(0)
    model = Model("sage", 2, dropout=0.5)
    sampler = dgl_mvs.MVSSampler(g, torch.arange(200), 16, model=model, **FEATS)
    assert sampler.block_kind == "onehop" and not sampler.has_checkpoints
    assert sampler.adaptive_mix and sampler.uniform_mix in dgl_mvs.sampler.MIX_CHOICES
    steps = _train(g, model, sampler, epochs=2, num_workers=num_workers)
    assert steps == list(range(2 * sampler.steps_per_epoch))
    # Training scored training nodes only; a score refresh scores every one of them.
    assert not bool(sampler.scores.written(torch.arange(200, 400)).any())
    sampler.refresh_scores()
    assert bool(sampler.scores.written(torch.arange(200)).all())
    assert not bool(sampler.scores.written(torch.arange(200, 400)).any())


def test_weighted_loss_is_unbiased_for_the_mean_training_loss():
    """sum_i w_i loss_i over MVS draws averages to the mean loss over the training set."""
    g = random_graph()
    torch.manual_seed(0)
    model = Model("sage", 2).eval()
    train = torch.arange(0, 400, 2)
    # importance="always": the seeds are importance-sampled whatever they cost.
    sampler = dgl_mvs.MVSSampler(g, train, 16, model=model, score_every=0, importance="always",
                                 **FEATS)
    skewed = (train.double() * 7919 % 101) / 10 + 0.05
    sampler.scores.write(train, skewed.float())  # far from uniform probabilities
    with torch.no_grad():
        full = model([g, g], g.ndata["feat"])
        exact = F.cross_entropy(full[train], g.ndata["label"][train]).item()
        estimates = []
        for step in range(600):
            seeds, weights = sampler._draw_step(step)
            _, _, blocks = sampler.blocks_for(seeds)
            logits = model(blocks, blocks[0].srcdata["feat"])
            losses = F.cross_entropy(logits, g.ndata["label"][seeds.long()], reduction="none")
            estimates.append(float((weights.float() * losses).sum()))
    estimates = torch.tensor(estimates, dtype=torch.float64)
    sem = estimates.std() / len(estimates) ** 0.5
    assert abs(estimates.mean() - exact) < 4 * sem, (estimates.mean(), exact, sem)
    probs = sampler.current_probabilities()
    assert probs.max() / probs.min() > 5  # importance sampling did happen


def test_score_refresh_schedule_and_cost_rule():
    """Refreshes run when fresh scores measure a loss to staleness (tests/test_seeds.py):
    scores that measure nothing (all zero) never call for one.  The budget's period follows
    the row model: smaller batches, more steps between refreshes."""
    g = random_graph()
    model = Model("sage", 2)
    sampler = dgl_mvs.MVSSampler(g, torch.arange(200), 16, model=model, score_every=4, **FEATS)
    sampler.set_epoch(0)
    loader = dgl.dataloading.DataLoader(g, sampler.step_ids(), sampler)
    for i, (_, _, blocks) in enumerate(loader):
        logits = model(blocks, blocks[0].srcdata["feat"])
        sampler.update_scores(blocks, torch.zeros(logits.shape[0]))
    assert sampler.seed_report().refreshes == 0 and sampler.seed_report().mode == "uniform"
    small, large = (dgl_mvs.MVSSampler(g, torch.arange(200), b, model=model, **FEATS)
                    for b in (8, 64))
    assert small.score_every > large.score_every >= 1  # refreshes cost ~3% of the steps
    assert small.score_every % small.schedule.interval == 0  # whole intervals


def test_checkpoint_resume_is_bit_identical(tmp_path):
    """Save after epoch 0, load into fresh objects, train epoch 1: the same as no stop."""

    def build():
        g = random_graph()
        torch.manual_seed(0)
        model = Model("sage", 2, dropout=0.5)
        sampler = dgl_mvs.MVSSampler(g, torch.arange(200), 16, model=model, fanouts=[-1, 2],
                                     seed=3, **FEATS)
        sampler.block_sampler.refresh_every = 40  # refreshes inside the epochs
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        return g, model, sampler, opt

    def epoch(g, model, sampler, opt, number):
        sampler.set_epoch(number)
        seeds = []
        loader = dgl.dataloading.DataLoader(g, sampler.step_ids(), sampler,
                                            generator=torch.Generator())
        for _, output_nodes, blocks in loader:
            logits = model(blocks, blocks[0].srcdata["feat"])
            labels = blocks[-1].dstdata["label"]
            loss = (blocks[-1].dstdata["mvs_weight"]
                    * F.cross_entropy(logits, labels, reduction="none")).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sampler.update_scores(blocks, dgl_mvs.cross_entropy_grad_norm(logits, labels))
            seeds.append(output_nodes)
        return seeds

    g, model, sampler, opt = build()
    epoch(g, model, sampler, opt, 0)
    path = tmp_path / "ckpt.pt"
    dgl_mvs.save_checkpoint(path, model=model, optimizer=opt, sampler=sampler)
    straight = epoch(g, model, sampler, opt, 1)

    g2, model2, sampler2, opt2 = build()
    dgl_mvs.load_checkpoint(path, model=model2, optimizer=opt2, sampler=sampler2)
    resumed = epoch(g2, model2, sampler2, opt2, sampler2.epoch)
    assert sampler2.block_sampler.refreshed == sampler.block_sampler.refreshed
    assert len(straight) == len(resumed)
    assert all(torch.equal(a, b) for a, b in zip(straight, resumed))
    for key, value in model.state_dict().items():
        assert torch.equal(value, model2.state_dict()[key]), key
    state = sampler.state_dict()
    bad = dict(state, blocks=dict(state["blocks"], snapshots={}))
    with pytest.raises(ValueError, match="snapshots"):
        sampler2.load_state_dict(bad)


def test_gradient_variance_diagnostic():
    g = random_graph()
    torch.manual_seed(0)
    model = Model("sage", 2, dropout=0.5)
    sampler = dgl_mvs.MVSSampler(g, torch.arange(200), 16, model=model, **FEATS)
    _train(g, model, sampler, epochs=2)
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = gradient_variance(sampler, model, repeats=6)
    assert set(result) >= {"realised_ratio", "oracle_ratio", "sampler_ratio"}
    report = sampler.seed_report()  # and what the seed switch chose
    assert result["importance_sampled"] == (report.mode == "mvs")
    assert result["predicted_ratio"] == report.ratio or math.isnan(report.ratio)
    # The optimal probabilities for the exact norms never do worse than uniform ones.
    assert result["oracle_ratio"] <= 1.0 + 1e-9
    assert result["realised_ratio"] > 0 and result["sampler_ratio"] > 0
    assert model.training  # mode restored
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(bool((p.grad == 7.0).all()) for p in model.parameters())  # grads restored


@pytest.mark.skipif(not hasattr(os, "fork"), reason="workers fork")
def test_control_variate_default_on_a_dense_graph():
    """Mean degree above the rule's bound: the last layer uses control variates."""
    g = dgl.rand_graph(300, 300 * 60)
    g.ndata["feat"] = torch.randn(300, 12)
    g.ndata["label"] = torch.randint(0, 5, (300,))
    model = Model("gcn_both", 2)
    sampler = dgl_mvs.MVSSampler(g, torch.arange(200), 16, model=model, **FEATS)
    assert sampler.block_sampler.fanouts[1] == dgl_mvs.onehop.LAST_CV_FANOUT
    steps = _train(g, model, sampler, epochs=1)
    assert len(steps) == sampler.steps_per_epoch
    assert sampler.block_sampler.refreshed >= 1
