"""Seeds that pay, or step aside (dgl_mvs.seeds): the measured ratio, the choice between
importance-sampled and uniform seeds, uniform seeds, refreshes, the report, reproducibility."""
import math

import dgl
import pytest
import torch
import torch.nn.functional as F

import dgl_mvs
from dgl_mvs.probabilities import mvs_probabilities
from dgl_mvs.sampler import FIXED_MIX
from dgl_mvs.seeds import MIX_CHOICES, SeedSwitch
from dgl_mvs.variance import (estimator_variance, sampled_mix_variances,
                              sampled_optimal_variance)
from conftest import random_graph
from test_onehop import Model

FEATS = dict(prefetch_node_feats=["feat"], prefetch_labels=["label"])
TRAIN = torch.arange(200)


def skewed(nodes):
    """Deterministic scores spread over [0.05, 10.05]: importance sampling pays on them."""
    return ((nodes.double() * 7919 % 101) / 10 + 0.05).float()


def sampler_for(g, **kwargs):
    options = dict(score_every=0, seed=0, **FEATS)
    options.update(kwargs)
    return dgl_mvs.MVSSampler(g, TRAIN, 16, model=Model("sage", 2), **options)


def drive(g, sampler, scores, epochs=1, num_workers=0):
    """The DataLoader loop without a model: [(step, seeds, weights)] with given scores."""
    out = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        loader = dgl.dataloading.DataLoader(g, sampler.step_ids(), sampler,
                                            num_workers=num_workers)
        for _, output_nodes, blocks in loader:
            out.append((int(blocks[-1].dstdata["mvs_step"][0]), output_nodes,
                        blocks[-1].dstdata["mvs_weight"]))
            sampler.update_scores(blocks, scores(output_nodes))
    return out


# ---------------------------------------------------------------------- the estimates
def test_sampled_estimates_are_unbiased_for_the_closed_form():
    """Over Poisson draws with p, the sampled sums average to the pool's closed forms."""
    gen = torch.Generator().manual_seed(0)
    n, b = 3000, 60
    fresh = torch.rand(n, generator=gen, dtype=torch.float64) ** 3
    stale = (fresh + 0.3 * torch.rand(n, generator=gen, dtype=torch.float64)).clamp(min=0)
    candidate = mvs_probabilities(stale, b)
    drawn_with = 0.75 * candidate + 0.25 * b / n
    mixes = (0.1, 0.5, 1.0)
    exact = [estimator_variance(0.0 + (1 - a) * candidate + a * b / n, fresh) * n * n
             for a in mixes]
    draws = [torch.nonzero(torch.rand(n, generator=gen, dtype=torch.float64) < drawn_with)
             .squeeze(1) for _ in range(400)]
    estimates = torch.stack([sampled_mix_variances(candidate[d], fresh[d], drawn_with[d],
                                                   b / n, mixes) for d in draws])
    mean, sem = estimates.mean(0), estimates.std(0) / len(draws) ** 0.5
    for a, e, m, s in zip(mixes, exact, mean.tolist(), sem.tolist()):
        assert abs(m - e) < 4 * s, (a, m, e, s)
    # The optimum of the fresh norms: exact on the whole pool, close from samples of it.
    optimum = mvs_probabilities(fresh, b, min_score=1e-300)
    exact_opt = estimator_variance(optimum, fresh) * n * n
    whole = sampled_optimal_variance(fresh, torch.ones(n, dtype=torch.float64), b)
    assert whole == pytest.approx(exact_opt, rel=1e-9)
    sampled = [sampled_optimal_variance(fresh[d], drawn_with[d], b) for d in draws[:100]]
    assert sum(sampled) / len(sampled) == pytest.approx(exact_opt, rel=0.05)
    assert exact_opt < exact[-1]  # below uniform seeds'


# ---------------------------------------------------------------------- uniform seeds
def test_uniform_seeds_take_every_node_once_per_epoch_with_plain_mean_weights():
    g = random_graph()
    sampler = dgl_mvs.MVSSampler(g, TRAIN, 20, model=Model("sage", 2), score_every=0, seed=0,
                                 **FEATS)
    steps = drive(g, sampler, lambda nodes: torch.ones(nodes.numel()), epochs=2)
    assert sampler.seed_report().mode == "uniform"  # equal scores: nothing beats them
    assert "no share" in sampler.seed_report().reason
    per_epoch = sampler.steps_per_epoch
    for epoch in range(2):
        seeds = torch.cat([s for _, s, _ in steps[epoch * per_epoch:(epoch + 1) * per_epoch]])
        assert torch.equal(torch.sort(seeds).values, TRAIN)  # every node once
    for _, seeds, weights in steps:
        assert torch.equal(weights, torch.full((20,), 1 / 20))  # exactly the plain mean
    firsts = [s for _, s, _ in steps[::per_epoch]]
    assert not torch.equal(firsts[0], firsts[1])  # another order every epoch
    # The same seeds with DataLoader workers.
    again = dgl_mvs.MVSSampler(g, TRAIN, 20, model=Model("sage", 2), score_every=0, seed=0,
                               **FEATS)
    with_workers = drive(g, again, lambda nodes: torch.ones(nodes.numel()), epochs=2,
                         num_workers=2)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(steps, with_workers))


def test_a_new_sampler_does_not_inherit_the_scores_of_another_on_the_graph():
    """Its choices are those of its own run (fail before: the second sampler measured r on
    the first one's table and chose other seeds)."""
    g = random_graph()
    first = sampler_for(g)
    drive(g, first, skewed)
    second = sampler_for(g)
    assert bool(first.scores.written(TRAIN).any()) and not bool(second.scores.written().any())
    assert g.ndata["mvs_score"] is second.scores.values
    alone = sampler_for(random_graph())
    a = drive(g, second, skewed)
    b = drive(alone.g, alone, skewed)
    assert all(torch.equal(x[1], y[1]) and torch.equal(x[2], y[2]) for x, y in zip(a, b))


# ---------------------------------------------------------------------- the choice
@pytest.mark.parametrize("shuffled", [False, True], ids=["sorted", "shuffled"])
def test_skewed_scores_switch_importance_sampling_on_and_the_report_says_why(shuffled):
    g = random_graph()
    # train_nids in any order: each node's fresh score meets its own p.
    train = TRAIN[torch.randperm(200, generator=torch.Generator().manual_seed(1))] \
        if shuffled else TRAIN
    sampler = dgl_mvs.MVSSampler(g, train, 16, model=Model("sage", 2), score_every=0, seed=0,
                                 **FEATS)
    steps = drive(g, sampler, skewed, epochs=3)
    report = sampler.seed_report()
    assert report.mode == "mvs" and report.pays and report.uniform_mix == FIXED_MIX
    assert report.equivalent_batch > 1 + report.overhead
    assert report.ratio == pytest.approx(1 / report.equivalent_batch)
    assert "importance-sampled seeds: 1/r" in str(report)
    # Uniform seeds until the first interval's fresh scores have measured r; in the last
    # epoch (every node scored) importance-sampled seeds throughout.
    first = [w for step, _, w in steps if step < sampler.schedule.interval]
    last = [w for step, _, w in steps if step >= 2 * sampler.steps_per_epoch]
    assert all(bool((w == w[0]).all()) for w in first)
    assert all(not bool((w == w[0]).all()) for w in last)
    # Every node scored, the scores fixed: the measured ratio is the closed form's.
    q = mvs_probabilities(skewed(TRAIN).double(), 16)
    p = 0.75 * q + 0.25 * 16 / 200
    exact = estimator_variance(p, skewed(TRAIN)) / estimator_variance(
        torch.full((200,), 16 / 200, dtype=torch.float64), skewed(TRAIN))
    assert report.ratio == pytest.approx(exact, rel=0.1)


@pytest.mark.parametrize("importance, mode", [("auto", "uniform"), ("always", "mvs")])
def test_seeds_that_do_not_pay_step_aside_unless_asked_for(importance, mode):
    g = random_graph()
    sampler = sampler_for(g, importance=importance, overhead=5.0)  # 6x the step: never pays
    drive(g, sampler, skewed)
    report = sampler.seed_report()
    assert report.mode == mode and report.pays is False and report.overhead == 5.0
    if mode == "uniform":
        assert "does not pay for the overhead 1 + c = 6.000" in report.reason


# ---------------------------------------------------------------------- refreshes
def _switch(period=8, interval=2, refresh_steps=3.0):
    return SeedSwitch(MIX_CHOICES, "auto", None, period, interval, refresh_steps,
                      batch_size=10)


def _interval(switch, candidate_skew):
    """One interval's rows of a 100-node pool read whole (drawn_with = 1 per step): fresh
    norms skewed; the candidate p from scores that are ``candidate_skew`` like them."""
    fresh = torch.linspace(0.01, 1.0, 100, dtype=torch.float64) ** 3
    candidate = mvs_probabilities(fresh ** candidate_skew, 10)
    steps = switch.interval
    switch.add_interval(candidate.repeat(steps), fresh.repeat(steps),
                        torch.ones(100 * steps, dtype=torch.float64), 0.1, steps)
    switch.decide(0, overhead_model=0.02)
    switch.add_shortfall(steps, overhead_model=0.02)


def test_refreshes_run_when_stale_scores_cost_more_than_a_refresh():
    switch = _switch()
    _interval(switch, 1.0)  # the table's p is the fresh optimum: nothing to gain
    assert switch.shortfall < 0.05 and not switch.due()  # (but for the table's score floor)
    switch = _switch()
    _interval(switch, 0.0)  # stale scores all alike: p uniform, the fresh optimum far better
    assert switch.mix == 1.0 and switch.ratio == 1.0 and switch.fresh_ratio < 0.8
    # Before the first refresh the shortfall is counted against the fresh optimum r*
    # (the per-step cost 0.02 is below the refreshes' share 3 / 8 of the model's c).
    per_interval = 2 * (1 / switch.fresh_ratio - 1)
    assert switch.shortfall == pytest.approx(per_interval)
    intervals = 1
    while not switch.due():
        _interval(switch, 0.0)
        intervals += 1
    assert intervals == math.ceil(3.0 / per_interval) and switch.shortfall >= 3.0
    assert "lost to stale scores" in switch.refresh_reason


def test_refreshes_keep_to_their_budget():
    switch = _switch(refresh_steps=0.5)  # cheap refreshes: the budget decides
    _interval(switch, 0.0)
    assert switch.due() and switch.credit == 1.25  # one in advance, 2 / 8 per interval
    switch.refreshed(1)
    assert switch.credit == 0.25 and switch.shortfall == 0 and switch.refreshes == 1
    _interval(switch, 1.0)  # the first interval after a refresh is the reference
    assert switch.reference == pytest.approx(1 / switch.ratio) and switch.shortfall == 0
    for credit in (0.75, 1.0):
        _interval(switch, 0.0)  # stale again: short of the reference
        assert switch.shortfall > 0.5 and switch.credit == credit
        assert switch.due() == (credit >= 1.0)


def test_refreshes_keep_to_the_budget_in_training():
    g = random_graph()
    torch.manual_seed(0)
    model = Model("sage", 2, dropout=0.5)
    sampler = dgl_mvs.MVSSampler(g, TRAIN, 16, model=model, score_every=20, overhead=0.0,
                                 seed=0, **FEATS)
    calls = []
    refresh = sampler.refresh_scores
    sampler.refresh_scores = lambda *a, **k: (calls.append(sampler._last_updated_step),
                                              refresh(*a, **k))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    steps = _train(g, model, opt, sampler, epochs=4)
    assert calls, "no refresh in 52 steps"
    # One refresh in advance, then one per score_every steps at most.
    for k, step in enumerate(calls):
        assert k <= (step + 1) / 20 + 1e-9, calls
    report = sampler.seed_report()
    assert report.refreshes == len(calls) and report.last_refresh == calls[-1]
    assert len(steps) == 4 * sampler.steps_per_epoch


# ---------------------------------------------------------------------- reproducibility
def _train(g, model, opt, sampler, epochs, num_workers=0, save=None):
    """The README's loop to the end of ``epochs``: [(step, seeds, loss)]; a checkpoint after
    step ``save[0] - 1`` to ``save[1]``."""
    out = []
    for epoch in range(sampler.epoch, epochs):
        sampler.set_epoch(epoch)
        # Its own generator: iter(loader) leaves torch's (dropout's) alone.
        loader = dgl.dataloading.DataLoader(g, sampler.step_ids(), sampler,
                                            num_workers=num_workers,
                                            generator=torch.Generator())
        for _, output_nodes, blocks in loader:
            step = int(blocks[-1].dstdata["mvs_step"][0])
            logits = model(blocks, blocks[0].srcdata["feat"])
            labels = blocks[-1].dstdata["label"]
            loss = (blocks[-1].dstdata["mvs_weight"]
                    * F.cross_entropy(logits, labels, reduction="none")).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sampler.update_scores(blocks, dgl_mvs.cross_entropy_grad_norm(logits, labels))
            out.append((step, output_nodes, loss.detach()))
            if save is not None and step + 1 == save[0]:
                dgl_mvs.save_checkpoint(save[1], model=model, optimizer=opt, sampler=sampler)
    return out


def _build():
    g = random_graph()
    torch.manual_seed(0)
    model = Model("sage", 2, dropout=0.5)
    sampler = dgl_mvs.MVSSampler(g, TRAIN, 16, model=model, score_every=12, overhead=0.0,
                                 seed=5, **FEATS)
    sampler._switch.refresh_steps = 0.05  # refreshes that cost next to nothing: several
    return g, model, torch.optim.Adam(model.parameters(), lr=0.05), sampler


def test_choices_are_the_same_with_workers_and_after_a_resume(tmp_path):
    """Importance-sampled and uniform seeds, refreshes and choices: the same run with 0 or 2
    workers, and resumed mid-interval from a checkpoint (13 steps per epoch, intervals of 2)."""
    path, save_at = tmp_path / "run.pt", 21
    g, model, opt, sampler = _build()
    reference = _train(g, model, opt, sampler, 3, save=(save_at, path))
    switch = sampler._switch
    assert switch.refreshes >= 1 and any(mix < 1 for _, mix, *_ in switch.history)
    g2, model2, opt2, sampler2 = _build()
    with_workers = _train(g2, model2, opt2, sampler2, 3, num_workers=2)
    assert len(with_workers) == len(reference)
    assert all(torch.equal(a[2], b[2]) and torch.equal(a[1], b[1])
               for a, b in zip(reference, with_workers))
    g3, model3, opt3, sampler3 = _build()
    dgl_mvs.load_checkpoint(path, model=model3, optimizer=opt3, sampler=sampler3)
    assert sampler3.schedule.interval == 2 and save_at % 2 == 1  # mid-interval
    resumed = _train(g3, model3, opt3, sampler3, 3)
    assert len(resumed) == len(reference) - save_at
    assert all(torch.equal(a[2], b[2]) and torch.equal(a[1], b[1])
               for a, b in zip(reference[save_at:], resumed))
    assert sampler3._switch.history == switch.history


# ---------------------------------------------------------------------- report and errors
def test_report_and_arguments_are_checked():
    g = random_graph()
    text = str(sampler_for(g).seed_report())
    assert text.startswith("seeds: uniform (importance='auto', uniform share 1)")
    assert "overhead c = 2.0% of a step" in text  # no refreshes: the per-step share only
    history = dgl_mvs.MVSSampler(g, TRAIN, 16, num_layers=2, block_sampler="exact")
    with pytest.raises(ValueError, match=r"gradient_variance\(sampler, model\)"):
        history.seed_report()
    for kwargs, match in (
            (dict(importance="sometimes"), "importance must be one of"),
            (dict(overhead=-0.1), "overhead must be a share"),
            (dict(overhead="timed"), "overhead must be a share"),
            (dict(probabilities="step", importance="auto"), "probabilities='frozen'")):
        with pytest.raises(ValueError, match=match):
            sampler_for(g, **kwargs)
    with pytest.raises(ValueError, match="one-hop blocks"):
        dgl_mvs.MVSSampler(g, TRAIN, 16, num_layers=2, block_sampler="exact", overhead=0.1)


@pytest.mark.parametrize("bad, match", [
    (float("nan"), "1 NaN"), (-1.0, "1 negative"), (float("inf"), "1 infinite"),
])
def test_update_scores_refuses_bad_scores_and_writes_nothing(bad, match):
    g = random_graph()
    sampler = sampler_for(g)
    sampler.set_epoch(0)
    _, output_nodes, blocks = next(iter(dgl.dataloading.DataLoader(g, sampler.step_ids(),
                                                                   sampler)))
    before = sampler.scores.values.clone()
    scores = torch.ones(output_nodes.numel())
    scores[3] = bad
    with pytest.raises(ValueError, match=f"finite and non-negative; got .*{match}"):
        sampler.update_scores(blocks, scores)
    with pytest.raises(ValueError, match="one score per output node"):
        sampler.update_scores(blocks, torch.ones(output_nodes.numel() + 1))
    assert torch.equal(sampler.scores.values, before)
    assert not bool(sampler.scores.written(TRAIN).any())


def test_measured_overhead_is_reported_and_used_only_when_asked_for(monkeypatch):
    g = random_graph()
    torch.manual_seed(0)
    model = Model("sage", 2)
    timed = dgl_mvs.MVSSampler(g, TRAIN, 16, model=model, overhead="measured", seed=0,
                               **FEATS)
    before = timed.seed_report()
    assert math.isnan(before.overhead_measured) and before.overhead == before.overhead_model
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    _train(g, model, opt, timed, 1)
    timed.refresh_scores()
    report = timed.seed_report()
    assert report.overhead_measured > 0 and report.overhead == report.overhead_measured
    assert {"step", "update", "refresh"} <= set(report.timings_ms)
    modelled = sampler_for(g, score_every=None)  # the default: measured, but not used
    assert modelled.seed_report().overhead == modelled.seed_report().overhead_model
    # Under torch.distributed the ranks' timings differ, and their choices must agree.
    monkeypatch.setattr(dgl_mvs.sampler, "process_group_place", lambda: (0, 2))
    with pytest.raises(ValueError, match=r"give the ranks one number \(e.g. overhead=0.05\)"):
        sampler_for(g, overhead="measured")


def test_a_zero_candidate_probability_is_measured_not_refused():
    """A score table's probability can round to 0 in float32: with a uniform share that node
    is still drawn and its term is finite; without one it is infinite (0 if its norm is 0).
    Refusing it stopped a training run (synthetic-100k, GCN) in the middle."""
    from dgl_mvs.variance import sampled_mix_variances
    q = torch.tensor([0.0, 0.5, 1.0, 0.0])
    f = torch.tensor([1.0, 1.0, 2.0, 0.0])
    drawn = torch.full((4,), 0.5)
    v = sampled_mix_variances(q, f, drawn, 0.5, [0.0, 0.5, 1.0])
    assert v[0].item() == float("inf")
    # a = 0.5: probabilities (0.25, 0.5, 0.75, 0.25); terms (1-p)/p f^2 / 0.5, the last 0.
    expected = (3.0 * 1 + 1.0 * 1 + (1 / 3) * 4) / 0.5
    assert abs(v[1].item() - expected) < 1e-9
    assert abs(v[2].item() - (1.0 + 1.0 + 4.0) / 0.5) < 1e-9


def test_a_negative_candidate_probability_is_still_refused():
    from dgl_mvs.variance import sampled_mix_variances
    with pytest.raises(ValueError, match=r"candidate must lie in \[0, 1\]"):
        sampled_mix_variances(torch.tensor([-0.1, 0.5]), torch.ones(2), torch.full((2,), 0.5),
                              0.5, [0.5])
