r"""Exact variance of the importance-weighted estimator, and the paper's Lemma 4.3.

Normalisation.  This module measures the estimator of the pool **mean**

.. math:: \hat g = \frac{1}{n} \sum_i \frac{\xi_i}{p_i} x_i, \qquad \xi_i \sim
          \mathrm{Bernoulli}(p_i) \text{ independent},

which is what training with Horvitz-Thompson weights ``1 / (p_i * n)`` computes.  Its variance
(trace of the covariance) is

.. math:: \mathbb{E}\|\hat g - \mathbb{E}\hat g\|^2 = \frac{1}{n^2}\sum_i
          \frac{1 - p_i}{p_i} \|x_i\|^2 ,

because the :math:`\xi_i` are independent with variance :math:`p_i(1 - p_i)`.

Lemma 4.3 of the paper states, for :math:`p^{us}_i = B/N` and
:math:`p^{is}_i = B g_i / S` (:math:`S = \sum_i g_i`, :math:`Q = \sum_i g_i^2`,
:math:`g_i = \|x_i\|`, no clipping),
:math:`\mathbb{G}(p^{us}) - \mathbb{G}(p^{is}) = \frac{S^2}{B^3 N}\|p^{is} - p^{us}\|^2`.
Expanding, :math:`\|p^{is} - p^{us}\|^2 = B^2 (Q / S^2 - 1 / N)`, so the right side is
:math:`Q / (BN) - S^2 / (B N^2)`.  With the formula above,
:math:`\mathrm{Var}(p^{us}) = Q/(BN) - Q/N^2` and :math:`\mathrm{Var}(p^{is}) = S^2/(BN^2) -
Q/N^2`, whose difference is exactly that.  So the lemma holds for the **mean** estimator
(``pool_size = N``).  The paper defines :math:`\mathbb{G}` on the un-normalised sum
:math:`\sum_i \xi_i / p_i\, x_i`, whose variances are :math:`N^2` times larger; for that
estimator the gap is :math:`N^2` times the lemma's closed form.
"""
from __future__ import annotations

import numbers

import torch

from .draws import check_probs
from .probabilities import check_batch_size, check_scores

__all__ = ["estimator_variance", "uniform_vs_mvs_variance_gap", "sampled_mix_variances",
           "sampled_optimal_probabilities", "sampled_optimal_variance"]


def estimator_variance(probs: torch.Tensor, vectors: torch.Tensor,
                       pool_size: int | None = None, scheme: str = "poisson") -> float:
    r"""Exact variance of the Horvitz-Thompson estimator ``sum_i xi_i / (p_i n) x_i``.

    Returns :math:`\mathbb{E}\|\hat g - \mathbb{E}\hat g\|^2 =
    \sum_i (1 - p_i)/p_i \, \|x_i\|^2 / n^2` for independent (Poisson) draws.

    Parameters
    ----------
    probs : Tensor
        ``(N,)`` inclusion probabilities in ``(0, 1]``.
    vectors : Tensor
        ``(N, D)`` per-node vectors (per-node gradients, say) or ``(N,)`` scalars.
    pool_size : int, optional
        The ``n`` of the weights ``1 / (p_i n)``; defaults to ``N`` (the estimator of the mean).
        ``pool_size=1`` gives the paper's un-normalised sum estimator.
    scheme : str, default "poisson"
        Only ``"poisson"`` has a closed form.  Systematic sampling in random order has the same
        inclusion probabilities but no simple closed form for its variance.

    Returns
    -------
    float

    Examples
    --------
    >>> import torch
    >>> from dgl_mvs.variance import estimator_variance
    >>> x = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    >>> estimator_variance(torch.tensor([0.5, 1.0]), x)  # (1 - .5)/.5 * 25 / 4
    6.25
    """
    if scheme != "poisson":
        raise ValueError(f"scheme must be 'poisson' (the only one with a closed-form variance), "
                         f"got {scheme!r}")
    check_probs(probs)
    if not isinstance(vectors, torch.Tensor) or vectors.dim() not in (1, 2) \
            or vectors.shape[0] != probs.shape[0]:
        raise ValueError(f"vectors must have shape ({probs.shape[0]},) or ({probs.shape[0]}, D), "
                         f"got {tuple(getattr(vectors, 'shape', ()))}")
    n = probs.shape[0] if pool_size is None else pool_size
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n <= 0:
        raise ValueError(f"pool_size must be a positive integer, got {pool_size!r}")
    p = probs.detach().double()
    x = vectors.detach().double().to(p.device)
    sq = x * x if x.dim() == 1 else (x * x).sum(1)
    return float(((1.0 - p) / p * sq).sum()) / float(n) ** 2


def uniform_vs_mvs_variance_gap(scores: torch.Tensor, batch_size: float) -> float:
    r"""Lemma 4.3: ``Var(uniform) - Var(MVS) = (sum g)^2 / (B^3 N) * ||p_is - p_us||^2``.

    ``p_us = B / N`` and ``p_is = B g / sum(g)``.  The value equals
    ``estimator_variance(p_us, x) - estimator_variance(p_is, x)`` for any vectors with
    ``||x_i|| = g_i``, i.e. for the estimator of the pool mean (see the module notes for the
    derivation; the paper's sum estimator has ``N**2`` times this gap).

    Parameters
    ----------
    scores : Tensor
        ``(N,)`` non-negative scores ``g_i``, not all zero.
    batch_size : float
        Expected batch size ``B``.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If ``B * max(g) > sum(g)``: some ``p_is`` would exceed one, MVS clips it and the lemma's
        closed form no longer applies (also for invalid scores or batch size).

    Examples
    --------
    >>> import torch
    >>> from dgl_mvs.variance import uniform_vs_mvs_variance_gap
    >>> uniform_vs_mvs_variance_gap(torch.tensor([1.0, 1.0]), 1)  # equal scores: no gain
    0.0
    """
    check_scores(scores)
    b = check_batch_size(batch_size)
    g = scores.detach().double()
    s = float(g.sum())
    if s <= 0:
        raise ValueError("scores are all zero: the MVS distribution is undefined")
    n = g.numel()
    if b * float(g.max()) > s * (1 + 1e-12):
        raise ValueError(f"Lemma 4.3 assumes no clipping, but batch_size * max(score) = "
                         f"{b * float(g.max()):.6g} > sum(score) = {s:.6g}")
    p_is = b * g / s
    dist2 = float(((p_is - b / n) ** 2).sum())
    return s * s / (b ** 3 * n) * dist2


def sampled_mix_variances(candidate: torch.Tensor, fresh: torch.Tensor, drawn_with: torch.Tensor,
                          uniform: float, mixes) -> torch.Tensor:
    r"""Estimates of ``sum_i (1 - q_i) / q_i f_i^2`` over a pool, from one sample of it.

    ``q = (1 - a) * candidate + a * uniform`` for each uniform share ``a`` in ``mixes``:
    the Poisson variance (times ``n^2``) of the Horvitz-Thompson mean under ``q`` when the
    per-node vectors have norms ``f``.  The sample is the nodes that a draw with inclusion
    probabilities ``drawn_with`` took, with their fresh norms ``f``; weighting each term by
    ``1 / drawn_with`` makes every sum an unbiased estimate of the pool's (the same sample
    serves all ``a``, so their ratios are estimated together).  With ``a = 1``,
    ``q = uniform``: the ratio of a share's estimate to that one is the predicted variance
    ratio of those probabilities against uniform seeds.

    Parameters
    ----------
    candidate : Tensor
        ``(m,)`` probabilities without uniform share, of the sampled nodes (in ``(0, 1]``).
    fresh : Tensor
        ``(m,)`` fresh norms ``f`` of the sampled nodes (non-negative).
    drawn_with : Tensor
        ``(m,)`` inclusion probabilities with which the nodes were drawn (in ``(0, 1]``).
    uniform : float
        The uniform probability ``B / n`` (in ``(0, 1]``).
    mixes : sequence of float
        Uniform shares ``a`` in ``[0, 1]``.

    Returns
    -------
    Tensor
        ``(len(mixes),)`` float64 estimates.

    Examples
    --------
    >>> import torch
    >>> from dgl_mvs.variance import sampled_mix_variances
    >>> f = torch.tensor([2.0, 1.0, 1.0, 0.0])
    >>> q = torch.tensor([1.0, 0.5, 0.5, 0.0001])
    >>> whole = sampled_mix_variances(q, f, torch.ones(4), 0.5, [0.0, 1.0])  # every node
    >>> [round(v, 4) for v in whole.tolist()]  # (1-q)/q f^2 summed; uniform: (1-.5)/.5 * 6
    [2.0, 6.0]
    """
    # A candidate probability may be 0 (a score table's float32 probability of a node whose
    # score is negligible): under a uniform share it is still drawn, without one its term
    # is infinite (0 where its norm is 0).  Negative, NaN or above 1 is refused.
    if isinstance(candidate, torch.Tensor) and candidate.is_floating_point() \
            and candidate.numel() and not bool(((candidate >= 0) & (candidate <= 1)).all()):
        raise ValueError("candidate must lie in [0, 1]")
    check_probs(candidate.clamp(min=torch.finfo(candidate.dtype).tiny)
                if isinstance(candidate, torch.Tensor) and candidate.is_floating_point()
                else candidate, "candidate")
    check_probs(drawn_with, "drawn_with")
    if not isinstance(fresh, torch.Tensor) or fresh.shape != candidate.shape \
            or drawn_with.shape != candidate.shape:
        raise ValueError(
            f"candidate, fresh and drawn_with must have one entry per sampled node, got "
            f"shapes {tuple(candidate.shape)}, {tuple(getattr(fresh, 'shape', ()))} and "
            f"{tuple(drawn_with.shape)}"
        )
    if isinstance(uniform, bool) or not isinstance(uniform, numbers.Real) \
            or not 0.0 < float(uniform) <= 1.0:
        raise ValueError(f"uniform must be a probability in (0, 1], got {uniform!r}")
    shares = torch.tensor([float(a) for a in mixes], dtype=torch.float64)
    if shares.numel() == 0 or bool(((shares < 0) | (shares > 1)).any()):
        raise ValueError(f"mixes must be uniform shares in [0, 1], got {list(mixes)}")
    q = candidate.detach().double().cpu()
    mixed = (1.0 - shares)[:, None] * q[None, :] + (shares * float(uniform))[:, None]
    weight = fresh.detach().double().cpu() ** 2 / drawn_with.detach().double().cpu()
    terms = (1.0 - mixed) / mixed * weight[None, :]
    return torch.where(weight[None, :] == 0, 0.0, terms).sum(1)


def sampled_optimal_probabilities(fresh: torch.Tensor, drawn_with: torch.Tensor,
                                  batch_size: float) -> torch.Tensor:
    r"""The minimal-variance probabilities of a pool's fresh norms, at the nodes of a sample.

    ``q_i = min(1, f_i / mu)`` with ``sum q = B`` over the pool, which the sample represents,
    each node standing for ``1 / drawn_with`` nodes: ``mu`` solves
    ``sum_i min(1, f_i / mu) / drawn_with_i = B`` (clipped nodes counted by their weights).
    What scores refreshed now would give (without the floor of
    :func:`dgl_mvs.probabilities.mvs_probabilities`).

    Parameters
    ----------
    fresh : Tensor
        ``(m,)`` fresh norms of the sampled nodes (non-negative).
    drawn_with : Tensor
        ``(m,)`` inclusion probabilities with which they were drawn (in ``(0, 1]``).
    batch_size : float
        ``B``.

    Returns
    -------
    Tensor
        ``(m,)`` float64 probabilities in ``[0, 1]`` (0 for zero norms; all ones when the
        budget covers the pool).

    Examples
    --------
    >>> import torch
    >>> from dgl_mvs.variance import sampled_optimal_probabilities
    >>> f = torch.tensor([4.0, 1.0, 1.0, 1.0, 1.0])  # the whole pool (drawn_with = 1)
    >>> sampled_optimal_probabilities(f, torch.ones(5), 2)
    tensor([1.0000, 0.2500, 0.2500, 0.2500, 0.2500], dtype=torch.float64)
    """
    check_probs(drawn_with, "drawn_with")
    if not isinstance(fresh, torch.Tensor) or fresh.shape != drawn_with.shape:
        raise ValueError(
            f"fresh and drawn_with must have one entry per sampled node, got shapes "
            f"{tuple(getattr(fresh, 'shape', ()))} and {tuple(drawn_with.shape)}"
        )
    b = check_batch_size(batch_size)
    f = fresh.detach().double().cpu()
    sorted_f, order = torch.sort(f, descending=True)
    w = 1.0 / drawn_with.detach().double().cpu()[order]
    zero = f.new_zeros(1)
    clipped = torch.cat([zero, w.cumsum(0)])  # pool nodes at q = 1 if the k largest are
    rest = (w * sorted_f).sum() - torch.cat([zero, (w * sorted_f).cumsum(0)])
    room = b - clipped
    following = torch.cat([sorted_f, zero])  # f_(k+1)
    ok = (room > 0) & (following * room <= rest)
    if not bool(ok.any()) or not float(rest[0]) > 0:
        return torch.ones_like(f)
    k = int(ok.to(torch.int8).argmax())
    return (f / (rest[k] / room[k])).clamp_(max=1.0)


def sampled_optimal_variance(fresh: torch.Tensor, drawn_with: torch.Tensor,
                             batch_size: float) -> float:
    r"""Estimate of ``min_q sum_i (1 - q_i) / q_i f_i^2`` over a pool, from one sample of it.

    The variance (times ``n^2``) of the Horvitz-Thompson mean under the minimal-variance
    probabilities of the fresh norms themselves (:func:`sampled_optimal_probabilities`):
    ``sum_{q_i < 1} (mu f_i - f_i^2) / drawn_with_i``.

    Examples
    --------
    >>> import torch
    >>> from dgl_mvs.variance import sampled_optimal_variance
    >>> f = torch.tensor([4.0, 1.0, 1.0, 1.0, 1.0])  # the whole pool (drawn_with = 1)
    >>> sampled_optimal_variance(f, torch.ones(5), 2)  # q = (1, .25, .25, .25, .25): 4 * 3
    12.0
    """
    q = sampled_optimal_probabilities(fresh, drawn_with, batch_size)
    f = fresh.detach().double().cpu()
    w = 1.0 / drawn_with.detach().double().cpu()
    keep = (q < 1.0) & (f > 0)
    return float((w[keep] * f[keep] ** 2 * (1.0 / q[keep] - 1.0)).sum())
