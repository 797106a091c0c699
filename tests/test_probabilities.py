"""mvs_probabilities: optimality (Eq. 8), the form of Theorem 4.1, floors and errors."""
import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from dgl_mvs.probabilities import DEFAULT_FLOOR_FRACTION, mvs_probabilities

# A floor far below every test score: the solver then solves Eq. 8 for the raw scores.
NO_FLOOR = 1e-300


def objective(g, p):
    g, p = np.asarray(g, dtype=np.float64), np.asarray(p, dtype=np.float64)
    return float((g * g / p).sum())


def scipy_optimum(g, b):
    """Numerical solution of Eq. 8 by SLSQP, started from uniform probabilities."""
    n = len(g)
    g = np.asarray(g, dtype=np.float64)
    scale = (g * g).sum()
    res = minimize(
        lambda p: (g * g / p).sum() / scale,
        np.full(n, b / n),
        jac=lambda p: -(g * g) / (p * p) / scale,
        bounds=[(1e-9, 1.0)] * n,
        constraints=[{"type": "eq", "fun": lambda p: p.sum() - b, "jac": lambda p: np.ones(n)}],
        method="SLSQP",
        options={"ftol": 1e-15, "maxiter": 2000},
    )
    return res.x


def bisection_reference(g, b):
    """Independent solution: sum_i min(1, g_i / mu) = B is decreasing in mu; bisect."""
    g = np.asarray(g, dtype=np.float64)
    lo, hi = 0.0, g.sum() / b * 2 + g.max()
    for _ in range(300):
        mid = (lo + hi) / 2
        if np.minimum(1.0, g / mid).sum() > b:
            lo = mid
        else:
            hi = mid
    return np.minimum(1.0, g / hi)


def instances(count, seed):
    rng = np.random.default_rng(seed)
    for t in range(count):
        n = int(rng.integers(5, 60))
        # Heavy tails so that several probabilities are clipped to one.
        g = rng.lognormal(0.0, float(rng.uniform(0.2, 2.5)), size=n)
        b = float(rng.uniform(1.0, n - 1)) if t % 2 else float(rng.integers(1, n))
        yield g, b


def assert_theorem_form(g, p, atol=1e-12):
    """p = min(1, g / mu) for one mu: g/p is constant on p < 1 and g >= mu where p = 1."""
    g, p = np.asarray(g, np.float64), np.asarray(p, np.float64)
    free = p < 1 - 1e-12
    assert free.any()
    mu = g[free] / p[free]
    np.testing.assert_allclose(mu, mu.mean(), rtol=1e-10)
    assert (g[~free] >= mu.mean() * (1 - 1e-10)).all()
    np.testing.assert_allclose(p, np.minimum(1.0, g / mu.mean()), rtol=1e-10, atol=atol)


@pytest.mark.parametrize("seed", [0, 1])
def test_optimal_against_scipy(seed):
    clipped_seen = 0
    for g, b in instances(15, seed):
        p = mvs_probabilities(torch.tensor(g), b, min_score=NO_FLOOR).numpy()
        q = scipy_optimum(g, b)
        assert abs(q.sum() - b) < 1e-6 and q.min() > 0 and q.max() <= 1 + 1e-12
        # Ours is exact, so no feasible point beats it (up to the solver's feasibility slack).
        assert objective(g, p) <= objective(g, q) * (1 + 1e-6)
        # And the numerical optimum is close to ours: both solve the same problem.
        assert objective(g, q) <= objective(g, p) * (1 + 1e-4)
        assert_theorem_form(g, p)
        clipped_seen += int((p == 1).sum() > 0)
    assert clipped_seen >= 5  # the instances exercise clipping


def test_matches_bisection_and_kkt_on_larger_instances():
    rng = np.random.default_rng(7)
    for n, b in [(1000, 10), (1000, 500.5), (20000, 512), (20000, 19999)]:
        g = rng.pareto(1.2, size=n) + 1e-3  # extremely heavy tail: many clipped
        p = mvs_probabilities(torch.tensor(g), b, min_score=NO_FLOOR).numpy()
        np.testing.assert_allclose(p, bisection_reference(g, b), rtol=1e-9, atol=1e-12)
        assert abs(p.sum() - b) < 1e-9 * b
        assert_theorem_form(g, p)


def test_no_clipping_gives_proportional():
    g = torch.rand(100, dtype=torch.float64) + 0.5
    b = 10
    assert b * g.max() <= g.sum()
    p = mvs_probabilities(g, b)
    torch.testing.assert_close(p, b * g / g.sum(), rtol=1e-12, atol=0)


def test_paper_example_one_clipped():
    p = mvs_probabilities(torch.tensor([8.0, 1.0, 1.0, 1.0, 1.0], dtype=torch.float64), 2)
    torch.testing.assert_close(p, torch.tensor([1.0, 0.25, 0.25, 0.25, 0.25],
                                               dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("b", [1, 7.5, 512, 9999])
def test_sum_bounds_and_dtype(dtype, b):
    gen = torch.Generator().manual_seed(3)
    n = 10000
    scores = (torch.rand(n, generator=gen, dtype=torch.float64) ** 8 * 1e3).to(dtype)
    scores[:100] = 0.0  # zeros
    scores[100:2000] = scores[100]  # a large tie
    p = mvs_probabilities(scores, b)
    assert p.dtype == dtype and p.shape == (n,)
    assert bool((p > 0).all()) and bool((p <= 1).all())
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    assert abs(float(p.double().sum()) - b) <= tol * b


def test_ties_are_treated_alike():
    g = torch.tensor([5.0, 5.0, 5.0, 1.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    for b in [1, 2, 2.5, 3, 4, 6]:
        p = mvs_probabilities(g, b)
        assert torch.unique(p[:3]).numel() == 1 and torch.unique(p[3:]).numel() == 1
        assert abs(float(p.sum()) - b) < 1e-12


def test_all_equal_and_all_zero_are_uniform():
    for scores in [torch.full((50,), 3.0), torch.zeros(50)]:
        p = mvs_probabilities(scores, 5)
        torch.testing.assert_close(p, torch.full((50,), 0.1))
    # An explicit floor on all-zero scores also gives uniform.
    torch.testing.assert_close(mvs_probabilities(torch.zeros(4), 2, min_score=1.0),
                               torch.full((4,), 0.5))


def test_default_floor_keeps_zero_scores_drawable():
    g = torch.zeros(1000, dtype=torch.float64)
    g[:10] = torch.arange(1, 11, dtype=torch.float64)  # only 10 positive, batch of 32
    p = mvs_probabilities(g, 32)
    assert bool((p > 0).all())
    assert abs(float(p.sum()) - 32) < 1e-10
    # The zeros are lifted to 1 % of the mean positive score (5.5) and Eq. 8 is solved for
    # the lifted scores.
    lifted = torch.maximum(g, torch.tensor(DEFAULT_FLOOR_FRACTION * 5.5, dtype=torch.float64))
    np.testing.assert_allclose(p.numpy(), bisection_reference(lifted.numpy(), 32), rtol=1e-9)
    assert torch.unique(p[10:]).numel() == 1
    assert bool((p[5:10] == 1).all()) and float(p[0]) < 1


def test_default_floor_value():
    g = torch.ones(100, dtype=torch.float64)
    g[0] = 0.0
    g[1] = 1e-9
    p = mvs_probabilities(g, 1)
    floor = DEFAULT_FLOOR_FRACTION * g.sum() / 99  # 1 % of the mean positive score
    lifted = torch.maximum(g, floor)
    torch.testing.assert_close(p, lifted / lifted.sum(), rtol=1e-12, atol=0)


def test_min_score_is_absolute_floor():
    g = torch.tensor([0.0, 0.5, 2.0, 4.0], dtype=torch.float64)
    p = mvs_probabilities(g, 1, min_score=1.0)
    lifted = torch.tensor([1.0, 1.0, 2.0, 4.0], dtype=torch.float64)
    torch.testing.assert_close(p, lifted / lifted.sum())


def test_uniform_mix():
    gen = torch.Generator().manual_seed(0)
    g = torch.rand(500, generator=gen, dtype=torch.float64) ** 4
    b, a = 50, 0.2
    pure = mvs_probabilities(g, b)
    mixed = mvs_probabilities(g, b, uniform_mix=a)
    torch.testing.assert_close(mixed, (1 - a) * pure + a * b / 500)
    assert float(mixed.min()) >= a * b / 500 - 1e-15
    assert abs(float(mixed.sum()) - b) < 1e-10
    torch.testing.assert_close(mvs_probabilities(g, b, uniform_mix=1.0),
                               torch.full((500,), 0.1, dtype=torch.float64))


def test_batch_size_at_least_n_gives_ones():
    for b in [10, 11, 1e9]:
        torch.testing.assert_close(mvs_probabilities(torch.rand(10), b), torch.ones(10))


def test_small_fractional_batch():
    g = torch.tensor([4.0, 1.0, 1.0], dtype=torch.float64)
    p = mvs_probabilities(g, 0.5)
    torch.testing.assert_close(p, 0.5 * g / 6)


def test_scale_invariance_and_input_untouched():
    g = torch.rand(300, dtype=torch.float64) ** 3
    before = g.clone()
    p1 = mvs_probabilities(g, 30)
    p2 = mvs_probabilities(g * 1e6, 30)
    torch.testing.assert_close(p1, p2, rtol=1e-12, atol=0)
    assert torch.equal(g, before)


def test_integer_scores_give_default_float():
    p = mvs_probabilities(torch.tensor([3, 1, 0, 4]), 2)
    assert p.dtype == torch.float32 and abs(float(p.sum()) - 2) < 1e-6


def test_float32_extreme_range_stays_positive():
    g = torch.tensor([1e30, 1.0, 1e-30, 0.0], dtype=torch.float32)
    p = mvs_probabilities(g, 2, min_score=1e-38)
    assert bool((p > 0).all()) and abs(float(p.double().sum()) - 2) < 1e-6


@pytest.mark.parametrize(
    "scores, b, kwargs, match",
    [
        (torch.tensor([1.0, float("nan")]), 1, {}, "NaN"),
        (torch.tensor([1.0, float("inf")]), 1, {}, "infinite"),
        (torch.tensor([1.0, -0.5]), 1, {}, "non-negative"),
        (torch.tensor([1, -2]), 1, {}, "non-negative"),
        (torch.tensor([]), 1, {}, "empty"),
        (torch.ones(2, 2), 1, {}, "1-D"),
        (torch.tensor(1.0), 1, {}, "1-D"),
        ([1.0, 2.0], 1, {}, "torch.Tensor"),
        (torch.tensor([True, False]), 1, {}, "real numbers"),
        (torch.ones(3), 0, {}, "batch_size"),
        (torch.ones(3), -1, {}, "batch_size"),
        (torch.ones(3), float("nan"), {}, "batch_size"),
        (torch.ones(3), "2", {}, "batch_size"),
        (torch.ones(3), 1, {"uniform_mix": -0.1}, "uniform_mix"),
        (torch.ones(3), 1, {"uniform_mix": 1.5}, "uniform_mix"),
        (torch.ones(3), 1, {"min_score": 0.0}, "min_score"),
        (torch.ones(3), 1, {"min_score": -1.0}, "min_score"),
    ],
)
def test_errors(scores, b, kwargs, match):
    with pytest.raises(ValueError, match=match):
        mvs_probabilities(scores, b, **kwargs)


def test_no_python_loop_scaling():
    # 10**6 scores in well under a second: the solver is vectorised.
    import time

    g = torch.rand(10**6)
    t = time.perf_counter()
    p = mvs_probabilities(g, 512)
    assert time.perf_counter() - t < 2.0
    assert math.isclose(float(p.double().sum()), 512, rel_tol=1e-6)


def test_mix_uniform_is_what_uniform_mix_gives():
    from dgl_mvs.probabilities import mix_uniform

    g = torch.rand(500, generator=torch.Generator().manual_seed(2), dtype=torch.float64) ** 4
    base = mvs_probabilities(g, 40)
    for a in (0.0, 0.1, 0.5, 1.0):
        mixed = mix_uniform(base, 40, a)
        torch.testing.assert_close(mixed, mvs_probabilities(g, 40, uniform_mix=a),
                                   rtol=0, atol=1e-15)
        assert float(mixed.sum()) == pytest.approx(40)
    assert mix_uniform(base, 40, 0.0) is base
