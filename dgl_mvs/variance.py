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

__all__ = ["estimator_variance", "uniform_vs_mvs_variance_gap"]


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
