"""Exact estimator variance (against simulation) and Lemma 4.3 (against exact variances)."""
import math

import pytest
import torch

from dgl_mvs.draws import horvitz_thompson_weights, poisson_draw
from dgl_mvs.probabilities import mvs_probabilities
from dgl_mvs.variance import estimator_variance, uniform_vs_mvs_variance_gap


def vectors_with_norms(g, d=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(len(g), d, generator=gen, dtype=torch.float64)
    return u / u.norm(dim=1, keepdim=True) * g[:, None]


def test_exact_variance_matches_simulation():
    gen = torch.Generator().manual_seed(1)
    n, reps = 40, 40000
    x = torch.randn(n, 3, generator=gen, dtype=torch.float64) * torch.rand(n, 1, generator=gen)
    p = mvs_probabilities(x.norm(dim=1), 8, uniform_mix=0.3)
    # Vectorised Poisson draws: row r is one batch's indicator vector.
    xi = (torch.rand(reps, n, generator=gen, dtype=torch.float64) < p).double()
    est = (xi / (p * n)) @ x
    sq = ((est - x.mean(0)) ** 2).sum(1)  # centred at the true mean (unbiased estimator)
    exact = estimator_variance(p, x)
    assert abs(sq.mean().item() - exact) <= 5 * sq.std().item() / math.sqrt(reps)


def test_exact_variance_matches_draw_functions():
    gen = torch.Generator().manual_seed(2)
    n, reps = 30, 8000
    x = torch.randn(n, generator=gen, dtype=torch.float64)  # 1-D vectors are scalars
    p = mvs_probabilities(x.abs(), 6)
    est = torch.empty(reps, dtype=torch.float64)
    for r in range(reps):
        idx = poisson_draw(p, generator=gen)
        est[r] = (horvitz_thompson_weights(p[idx], n) * x[idx]).sum()
    exact = estimator_variance(p, x)
    sq = (est - x.mean()) ** 2
    assert abs(sq.mean().item() - exact) <= 5 * sq.std().item() / math.sqrt(reps)


def test_variance_formula_and_pool_size():
    p = torch.tensor([0.5, 1.0, 0.25], dtype=torch.float64)
    x = torch.tensor([[3.0, 4.0], [9.0, 9.0], [1.0, 0.0]], dtype=torch.float64)
    expected = (1.0 * 25 + 0 + 3.0 * 1) / 9
    assert estimator_variance(p, x) == pytest.approx(expected, rel=1e-14)
    assert estimator_variance(p, x, pool_size=1) == pytest.approx(expected * 9, rel=1e-14)
    assert estimator_variance(torch.ones(3), x) == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_lemma_4_3_closed_form_equals_difference_of_exact_variances(seed):
    gen = torch.Generator().manual_seed(seed)
    n, b = 200, 16
    g = torch.rand(n, generator=gen, dtype=torch.float64) + 0.05
    assert b * g.max() <= g.sum()  # the lemma's no-clipping assumption
    x = vectors_with_norms(g, seed=seed)
    p_us = torch.full((n,), b / n, dtype=torch.float64)
    p_is = mvs_probabilities(g, b)
    torch.testing.assert_close(p_is, b * g / g.sum(), rtol=1e-12, atol=0)  # Eq. 9, kappa = N

    closed = uniform_vs_mvs_variance_gap(g, b)
    # Mean estimator (weights 1/(p n)): the closed form holds exactly.
    gap = estimator_variance(p_us, x) - estimator_variance(p_is, x)
    assert closed == pytest.approx(gap, rel=1e-10)
    assert closed > 0
    # The paper's sum estimator sum xi_i/p_i x_i (pool_size=1): N**2 times larger.
    gap_sum = estimator_variance(p_us, x, pool_size=1) - estimator_variance(p_is, x, pool_size=1)
    assert gap_sum == pytest.approx(n**2 * closed, rel=1e-10)


def test_mvs_has_smallest_variance_among_feasible_probabilities():
    gen = torch.Generator().manual_seed(3)
    n, b = 100, 20
    g = torch.rand(n, generator=gen, dtype=torch.float64) ** 4 + 1e-3  # clipping occurs
    x = vectors_with_norms(g)
    p = mvs_probabilities(g, b)
    assert bool((p == 1).any())
    best = estimator_variance(p, x)
    for _ in range(200):  # random feasible competitors: sum q = B, 0 < q <= 1
        q = mvs_probabilities(g * torch.exp(torch.randn(n, generator=gen, dtype=torch.float64)),
                              b, uniform_mix=float(torch.rand(1, generator=gen)))
        assert estimator_variance(q, x) >= best * (1 - 1e-12)


def test_equal_scores_give_no_gap():
    assert uniform_vs_mvs_variance_gap(torch.full((10,), 2.0), 3) == pytest.approx(0.0, abs=1e-18)


def test_gap_rejects_clipping():
    g = torch.tensor([10.0, 1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="no clipping"):
        uniform_vs_mvs_variance_gap(g, 2)


@pytest.mark.parametrize(
    "args, match",
    [
        ((torch.zeros(3), 1), "all zero"),
        ((torch.tensor([1.0, -1.0]), 1), "non-negative"),
        ((torch.tensor([1.0, float("nan")]), 1), "NaN"),
        ((torch.ones(3), 0), "batch_size"),
    ],
)
def test_gap_errors(args, match):
    with pytest.raises(ValueError, match=match):
        uniform_vs_mvs_variance_gap(*args)


def test_variance_errors():
    p = torch.full((3,), 0.5)
    with pytest.raises(ValueError, match="scheme must be 'poisson'"):
        estimator_variance(p, torch.ones(3), scheme="systematic")
    with pytest.raises(ValueError, match="vectors must have shape"):
        estimator_variance(p, torch.ones(4, 2))
    with pytest.raises(ValueError, match="pool_size"):
        estimator_variance(p, torch.ones(3), pool_size=0)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        estimator_variance(torch.tensor([0.0, 1.0, 0.5]), torch.ones(3))
