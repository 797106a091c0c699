"""Minimal-variance inclusion probabilities (Cong et al., KDD 2020, Theorem 4.1 / Eq. 8-9).

Given scores ``g`` (upper bounds of per-node gradient norms) and an expected batch size ``B``,
the probabilities that minimise the variance of the Horvitz-Thompson gradient estimator solve

    minimise  sum_i g_i^2 / p_i    subject to  sum_i p_i = B,  0 < p_i <= 1,

whose solution is ``p_i = min(1, g_i / mu)``.  With the scores sorted in decreasing order
``s_1 >= s_2 >= ...`` and ``k`` of them clipped to one, ``mu_k = (sum_{j>k} s_j) / (B - k)``; the
right ``k`` is the smallest one with ``s_{k+1} <= mu_k``.  Only the ``ceil(B)`` largest scores
can be clipped, so a partial sort (``torch.topk``) and one cumulative sum suffice.
"""
from __future__ import annotations

import math
import numbers

import torch

__all__ = ["mvs_probabilities", "mix_uniform", "DEFAULT_FLOOR_FRACTION", "check_scores",
           "check_batch_size"]

#: Without ``min_score``, scores below this fraction of the mean positive score are lifted to
#: it.  Floored nodes then receive at most about this fraction of the batch in total, and a
#: drawn node's Horvitz-Thompson weight is at most ``1 / DEFAULT_FLOOR_FRACTION`` (= 100) times
#: the uniform-sampling weight ``1 / B``: stale or tiny scores cannot blow up the estimator.
DEFAULT_FLOOR_FRACTION = 1e-2


def check_batch_size(batch_size: object) -> float:
    """``batch_size`` as a positive finite float (a number or a one-element tensor)."""
    if isinstance(batch_size, torch.Tensor):
        if batch_size.numel() != 1:
            raise ValueError("batch_size must be a number, got a tensor with "
                             f"{batch_size.numel()} elements")
        batch_size = batch_size.item()
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Real):
        raise ValueError(f"batch_size must be a positive number, got {batch_size!r}")
    batch_size = float(batch_size)
    if not math.isfinite(batch_size) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive finite number, got {batch_size}")
    return batch_size


def check_scores(scores: object) -> None:
    """Raise ValueError unless ``scores`` is a non-empty 1-D tensor of finite scores >= 0."""
    if not isinstance(scores, torch.Tensor):
        raise ValueError(f"scores must be a torch.Tensor, got {type(scores).__name__}")
    if scores.dim() != 1:
        raise ValueError(f"scores must be 1-D (one score per node), got shape "
                         f"{tuple(scores.shape)}")
    if scores.numel() == 0:
        raise ValueError("scores is empty: there is no node to sample")
    if scores.dtype == torch.bool or scores.is_complex():
        raise ValueError(f"scores must be real numbers, got dtype {scores.dtype}")
    # One pass and one device sync on the happy path: min/max propagate NaN, which fails both
    # comparisons below.
    lo, hi = torch.aminmax(scores)
    if not bool((lo >= 0) & (hi < math.inf)):
        if scores.is_floating_point():
            n_nan = int(torch.isnan(scores).sum())
            if n_nan:
                raise ValueError(f"scores contain {n_nan} NaN value(s)")
            n_inf = int(torch.isinf(scores).sum())
            if n_inf:
                raise ValueError(f"scores contain {n_inf} infinite value(s)")
        raise ValueError(f"scores must be non-negative, got {int((scores < 0).sum())} negative "
                         f"value(s), minimum {scores.min().item()}")


def mvs_probabilities(
    scores: torch.Tensor,
    batch_size: float,
    *,
    uniform_mix: float = 0.0,
    min_score: float | None = None,
) -> torch.Tensor:
    r"""Inclusion probabilities that minimise the variance of the weighted gradient estimator.

    Solves Eq. 8 of the MVS-GNN paper exactly: :math:`\min \sum_i g_i^2 / p_i` subject to
    :math:`\sum_i p_i = B` and :math:`0 < p_i \le 1`, whose solution is
    :math:`p_i = \min(1, g_i / \mu)` (Theorem 4.1).  The computation is a partial sort of the
    ``ceil(B)`` largest scores plus a cumulative sum, ``O(n log B)``, on the scores' device.

    Parameters
    ----------
    scores : Tensor
        1-D tensor of non-negative scores, one per candidate node (for example per-node
        gradient norms from :func:`dgl_mvs.scores.cross_entropy_grad_norm`).
    batch_size : float
        Expected batch size ``B``; need not be an integer.  If ``B >= n`` every node is taken
        (all probabilities are one, and they sum to ``n``).
    uniform_mix : float, default 0.0
        Weight ``a`` in ``p = (1 - a) * p_mvs + a * B / n``, a mixture with uniform sampling
        that bounds every probability below by ``a * B / n``.  Must lie in ``[0, 1]``.
    min_score : float, optional
        Absolute floor: scores below it are lifted to it before solving.  Must be positive.
        By default the floor is ``DEFAULT_FLOOR_FRACTION`` (1 %) of the mean positive score.
        If all scores are zero the result is uniform.

    Returns
    -------
    Tensor
        Probabilities of the same shape and device as ``scores`` and of its floating dtype
        (``float32`` for integer scores).  Every entry is in ``(0, 1]`` and they sum to ``B``
        up to the rounding of that dtype.

    Raises
    ------
    ValueError
        If ``scores`` is not a non-empty 1-D tensor, contains NaN, infinite or negative
        values, if ``batch_size <= 0``, ``uniform_mix`` is outside ``[0, 1]`` or ``min_score``
        is not positive.

    Notes
    -----
    Zero scores would give ``p_i = 0``: such a node could never be drawn and the estimator
    would be biased.  The floor keeps every probability positive; the sum stays exactly ``B``
    because the floor is applied to the scores, before solving.  The computation runs in
    ``float64`` (``float32`` on MPS, which lacks ``float64``) so that the sum is exact to
    rounding even for ``10**7`` nodes.

    Examples
    --------
    >>> import torch
    >>> from dgl_mvs.probabilities import mvs_probabilities
    >>> p = mvs_probabilities(torch.tensor([8.0, 1.0, 1.0, 1.0, 1.0]), batch_size=2)
    >>> p
    tensor([1.0000, 0.2500, 0.2500, 0.2500, 0.2500])
    >>> float(p.sum())
    2.0

    The largest score is clipped to one; the rest share ``B - 1`` in proportion to their
    scores.  Zero scores are lifted to the floor, so they can still be drawn:

    >>> p = mvs_probabilities(torch.tensor([1.0, 0.0, 3.0]), batch_size=1)
    >>> bool((p > 0).all()), round(float(p.sum()), 6)
    (True, 1.0)
    """
    check_scores(scores)
    batch_size = check_batch_size(batch_size)
    if isinstance(uniform_mix, bool) or not isinstance(uniform_mix, numbers.Real) \
            or not 0.0 <= float(uniform_mix) <= 1.0:
        raise ValueError(f"uniform_mix must be a number in [0, 1], got {uniform_mix!r}")
    if min_score is not None and (isinstance(min_score, bool)
                                  or not isinstance(min_score, numbers.Real)
                                  or not math.isfinite(min_score) or min_score <= 0):
        raise ValueError(f"min_score must be a positive finite number, got {min_score!r}")

    out_dtype = scores.dtype if scores.is_floating_point() else torch.get_default_dtype()
    n = scores.numel()
    if batch_size >= n:
        return torch.ones(n, dtype=out_dtype, device=scores.device)

    # float64 keeps sum p = B exact to ~1e-16 relative even for 1e7 nodes.
    work = torch.float32 if scores.device.type == "mps" else torch.float64
    g = scores.to(work)
    if min_score is None:
        positive = torch.count_nonzero(scores)  # scores are >= 0 here
        if int(positive) == 0:  # nothing to go on: uniform
            return torch.full((n,), batch_size / n, dtype=out_dtype, device=scores.device)
        floor = DEFAULT_FLOOR_FRACTION * g.sum() / positive
    else:
        floor = torch.tensor(float(min_score), dtype=work, device=g.device)
    g = torch.maximum(g, floor)

    # Only the ceil(B) largest scores can be clipped to 1 (k < B).
    m = min(math.ceil(batch_size), n)
    top, top_idx = torch.topk(g, m, largest=True, sorted=True)
    # Sum of everything outside the top m, computed directly (no total - prefix cancellation).
    outside = g.index_fill(0, top_idx, 0.0).sum()
    # rest[k] = sum of all scores except the k largest, k = 0..m-1.
    rest = outside + top.flip(0).cumsum(0).flip(0)
    k = torch.arange(m, dtype=work, device=g.device)
    room = batch_size - k  # B - k > 0 for k < ceil(B)
    # k* is the smallest k with s_(k+1) <= rest_k / (B - k); k = m-1 always qualifies.
    ok = top * room <= rest
    kstar = ok.to(torch.int8).argmax()  # first True
    mu = rest[kstar] / room[kstar]
    p = (g / mu).clamp_(max=1.0)

    p = mix_uniform(p, batch_size, float(uniform_mix)).to(out_dtype)
    # Guard against underflow to 0 when casting extreme dynamic ranges to a narrow dtype.
    return p.clamp_(min=torch.finfo(out_dtype).tiny)


def mix_uniform(probs: torch.Tensor, batch_size: float, uniform_mix: float) -> torch.Tensor:
    """``(1 - a) * probs + a * B / n``: inclusion probabilities with a uniform share ``a``.

    The sum stays ``B`` when ``probs`` sums to ``B``, and every probability is at least
    ``a B / n``.  :func:`mvs_probabilities` with ``uniform_mix=a`` returns exactly this of its
    probabilities without share (floored at the dtype's smallest normal number); with
    ``a = 0`` the result is ``probs`` itself.

    Examples
    --------
    >>> import torch
    >>> from dgl_mvs.probabilities import mix_uniform
    >>> mix_uniform(torch.tensor([1.0, 0.5, 0.5, 0.0]), 2, 0.5)
    tensor([0.7500, 0.5000, 0.5000, 0.2500])
    """
    if uniform_mix == 0:
        return probs
    uniform = min(1.0, float(batch_size) / probs.numel())
    return (1.0 - float(uniform_mix)) * probs + float(uniform_mix) * uniform
