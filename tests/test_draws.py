"""Draws: unbiasedness of the weighted estimator, inclusion frequencies, exact sizes, errors."""
import math

import pytest
import torch

from dgl_mvs.draws import horvitz_thompson_weights, poisson_draw, systematic_draw
from dgl_mvs.probabilities import mvs_probabilities

DRAWS = {"poisson": poisson_draw, "systematic": systematic_draw}


def pool(n=200, d=3, b=20, seed=0):
    gen = torch.Generator().manual_seed(seed)
    # Per-node vectors with very unequal norms; scores are their norms, so some p clip to one.
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    x *= torch.exp(2 * torch.randn(n, 1, generator=gen, dtype=torch.float64))
    x += 0.5
    p = mvs_probabilities(x.norm(dim=1), b)
    assert bool((p == 1).any()) and bool((p < 1).any())
    return x, p


def estimates(draw, x, p, reps, seed):
    gen = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    out = torch.empty(reps, x.shape[1], dtype=torch.float64)
    for r in range(reps):
        idx = draw(p, generator=gen)
        out[r] = (horvitz_thompson_weights(p[idx], n)[:, None] * x[idx]).sum(0)
    return out


def test_poisson_unbiased_within_clt_bound_of_exact_variance():
    x, p = pool()
    reps = 20000
    est = estimates(poisson_draw, x, p, reps, seed=1)
    n = x.shape[0]
    # Exact per-coordinate variance of one estimate under Poisson sampling.
    var = (((1 - p) / p)[:, None] * x * x).sum(0) / n**2
    err = (est.mean(0) - x.mean(0)).abs()
    assert bool((err <= 5 * torch.sqrt(var / reps)).all()), (err, torch.sqrt(var / reps))
    # The spread of the estimates is the exact variance too (sanity of the bound itself).
    torch.testing.assert_close(est.var(0), var, rtol=0.1, atol=0)


def test_systematic_unbiased_within_clt_bound():
    x, p = pool()
    reps = 12000
    est = estimates(systematic_draw, x, p, reps, seed=2)
    sd = est.std(0) / math.sqrt(reps)
    err = (est.mean(0) - x.mean(0)).abs()
    assert bool((err <= 5 * sd).all()), (err, sd)


@pytest.mark.parametrize("scheme", ["poisson", "systematic"])
def test_inclusion_frequencies_match_p(scheme):
    n, b, reps = 60, 12, 12000
    gen = torch.Generator().manual_seed(5)
    p = mvs_probabilities(torch.rand(n, generator=gen, dtype=torch.float64) ** 3, b)
    counts = torch.zeros(n, dtype=torch.float64)
    for _ in range(reps):
        counts[DRAWS[scheme](p, generator=gen)] += 1
    sd = torch.sqrt(reps * p * (1 - p))
    # Per node: binomial(reps, p_i) marginally, 5 sigma (+1 for the lattice).
    assert bool(((counts - reps * p).abs() <= 5 * sd + 1).all())
    if scheme == "poisson":  # independent nodes: Pearson statistic ~ chi-square(n)
        free = p < 1
        stat = float((((counts - reps * p)[free] / sd[free]) ** 2).sum())
        k = int(free.sum())
        assert stat <= k + 5 * math.sqrt(2 * k), stat


def test_systematic_exact_size_no_repeats_float32_probs():
    gen = torch.Generator().manual_seed(0)
    scores = torch.rand(5000, generator=gen) ** 20  # many clipped, float32 rounding in sum
    p = mvs_probabilities(scores, 256)
    assert p.dtype == torch.float32 and bool((p == 1).any())
    certain = torch.nonzero(p == 1, as_tuple=True)[0]
    for _ in range(300):
        idx = systematic_draw(p, generator=gen)
        assert idx.numel() == 256 and idx.dtype == torch.long
        assert bool((idx[1:] > idx[:-1]).all())  # sorted, no repeats
        assert bool(torch.isin(certain, idx).all())


def test_systematic_non_integer_sum_has_floor_or_ceil_size_with_right_mean():
    gen = torch.Generator().manual_seed(3)
    p = torch.full((10,), 0.35, dtype=torch.float64)  # sum 3.5
    sizes = torch.tensor([systematic_draw(p, generator=gen).numel() for _ in range(4000)])
    assert set(sizes.tolist()) <= {3, 4}
    assert abs(sizes.double().mean().item() - 3.5) < 5 * 0.5 / math.sqrt(4000)


def test_poisson_size_distribution():
    gen = torch.Generator().manual_seed(4)
    p = torch.rand(300, generator=gen, dtype=torch.float64) * 0.5 + 0.01
    sizes = torch.tensor([poisson_draw(p, generator=gen).numel() for _ in range(4000)]).double()
    mean, var = float(p.sum()), float((p * (1 - p)).sum())
    assert abs(sizes.mean().item() - mean) < 5 * math.sqrt(var / 4000)
    assert abs(sizes.var().item() / var - 1) < 0.15


@pytest.mark.parametrize("scheme", ["poisson", "systematic"])
def test_seeded_and_sorted(scheme):
    p = mvs_probabilities(torch.rand(1000, dtype=torch.float64), 50)
    a = DRAWS[scheme](p, generator=torch.Generator().manual_seed(9))
    b = DRAWS[scheme](p, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a, b)
    assert bool((a[1:] > a[:-1]).all())


@pytest.mark.parametrize("scheme", ["poisson", "systematic"])
def test_all_ones_takes_everything(scheme):
    idx = DRAWS[scheme](torch.ones(7), generator=torch.Generator().manual_seed(0))
    assert torch.equal(idx, torch.arange(7))


def test_default_generator_works():
    torch.manual_seed(0)
    p = torch.full((100,), 0.1)
    assert systematic_draw(p).numel() == 10
    assert poisson_draw(p).dtype == torch.long


def test_horvitz_thompson_weights():
    w = horvitz_thompson_weights(torch.tensor([0.5, 0.25, 1.0], dtype=torch.float64), 4)
    torch.testing.assert_close(w, torch.tensor([0.5, 1.0, 0.25], dtype=torch.float64))
    # Uniform probabilities B/n give the plain batch mean, 1/B.
    w = horvitz_thompson_weights(torch.full((8,), 8 / 100), 100)
    torch.testing.assert_close(w, torch.full((8,), 1 / 8))


@pytest.mark.parametrize("fn", [poisson_draw, systematic_draw,
                                lambda p: horvitz_thompson_weights(p, 10)])
@pytest.mark.parametrize(
    "probs, match",
    [
        (torch.tensor([0.5, 0.0]), r"\(0, 1\]"),
        (torch.tensor([0.5, 1.5]), r"\(0, 1\]"),
        (torch.tensor([0.5, float("nan")]), r"\(0, 1\]"),
        (torch.full((2, 2), 0.5), "1-D"),
        (torch.tensor([1, 1]), "floating-point"),
        ([0.5], "torch.Tensor"),
    ],
)
def test_errors(fn, probs, match):
    with pytest.raises(ValueError, match=match):
        fn(probs)


@pytest.mark.parametrize("pool_size", [0, -3, 2.5, True])
def test_weight_pool_size_errors(pool_size):
    with pytest.raises(ValueError, match="pool_size"):
        horvitz_thompson_weights(torch.tensor([0.5]), pool_size)


def test_systematic_certain_units_among_fractional_ones():
    # p = 1 units are taken directly and given zero length on the line; the others keep p_i.
    p = torch.tensor([1.0, 0.3, 1.0, 0.45, 1.0, 0.25], dtype=torch.float64)  # sum 4
    gen = torch.Generator().manual_seed(11)
    reps = 6000
    counts = torch.zeros(6, dtype=torch.float64)
    for _ in range(reps):
        idx = systematic_draw(p, generator=gen)
        assert idx.numel() == 4 and bool((idx[1:] > idx[:-1]).all())
        counts[idx] += 1
    assert counts[[0, 2, 4]].tolist() == [reps] * 3
    free = torch.tensor([1, 3, 5])
    sd = torch.sqrt(reps * p[free] * (1 - p[free]))
    assert bool(((counts[free] - reps * p[free]).abs() <= 5 * sd).all())


@pytest.mark.parametrize("scheme", ["poisson", "systematic"])
def test_empty_pool_gives_empty_batch(scheme):
    idx = DRAWS[scheme](torch.zeros(0), generator=torch.Generator().manual_seed(0))
    assert idx.numel() == 0 and idx.dtype == torch.long


# ---------------------------------------------------------------- prepared systematic draws

def test_prepared_systematic_draws_have_exact_size_and_marginals():
    """Chunk-permuted draws from frozen p keep inclusion probabilities exactly p."""
    from dgl_mvs.draws import SystematicDraws

    gen = torch.Generator().manual_seed(3)
    scores = torch.rand(40, generator=gen, dtype=torch.float64) ** 2 + 0.01
    scores[:3] = 5.0  # clipped to p = 1
    probs = mvs_probabilities(scores, 8)
    draws = SystematicDraws(probs, gen, num_chunks=6)
    trials = 20_000
    counts = torch.zeros(40, dtype=torch.float64)
    for _ in range(trials):
        idx = draws.draw(gen)
        assert idx.numel() == 8 and torch.unique(idx).numel() == 8
        counts[idx] += 1
    freq = counts / trials
    sigma = (probs * (1 - probs) / trials).sqrt().clamp(min=1e-12)
    z = (freq - probs) / sigma
    assert bool((freq[:3] == 1).all())
    assert z[3:].abs().max() < 5, z.abs().max()


def test_prepared_draws_vary_between_draws():
    from dgl_mvs.draws import SystematicDraws

    gen = torch.Generator().manual_seed(0)
    draws = SystematicDraws(torch.full((5000,), 0.01, dtype=torch.float64), gen)
    a, b = draws.draw(gen), draws.draw(gen)
    assert a.numel() == b.numel() == 50 and not torch.equal(a, b)
    with pytest.raises(ValueError, match="num_chunks"):
        SystematicDraws(torch.full((10,), 0.5), gen, num_chunks=0)


def test_draws_in_one_given_order_keep_the_marginals_and_need_no_sort():
    """One order for every draw (MVSSampler's epoch order), one offset per draw: exact
    inclusion probabilities, exact sizes; sort=False gives the same positions unsorted."""
    from dgl_mvs.draws import SystematicDraws

    gen = torch.Generator().manual_seed(5)
    scores = torch.rand(60, generator=gen, dtype=torch.float64) ** 3 + 0.01
    scores[:4] = 9.0  # p = 1
    probs = mvs_probabilities(scores, 12)
    order = torch.randperm(60, generator=gen)
    draws = SystematicDraws(probs, order=order, num_chunks=1)
    assert torch.equal(draws.order, order)
    trials = 20_000
    counts = torch.zeros(60, dtype=torch.float64)
    for _ in range(trials):
        idx = draws.draw(gen, sort=False)
        assert idx.numel() == 12 and torch.unique(idx).numel() == 12
        counts[idx] += 1
    freq = counts / trials
    z = (freq - probs) / (probs * (1 - probs) / trials).sqrt().clamp(min=1e-12)
    assert bool((freq[:4] == 1).all()) and z[4:].abs().max() < 5, z.abs().max()
    a, b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    unsorted, ordered = draws.draw(a, sort=False), draws.draw(b)
    assert torch.equal(torch.sort(unsorted).values, ordered)
    for bad in (torch.arange(59), torch.rand(60), torch.arange(60)[None]):
        with pytest.raises(ValueError, match="order must be a 1-D integer tensor"):
            SystematicDraws(probs, order=bad)
