"""Drawing a batch with given inclusion probabilities, and its Horvitz-Thompson weights.

Both schemes include position ``i`` with probability exactly ``p_i``, so that
``sum_{i in batch} w_i * x_i`` with ``w_i = 1 / (p_i * n)`` is an unbiased estimate of the
pool mean ``(1/n) sum_i x_i``:

* :func:`poisson_draw` -- independent Bernoulli(``p_i``) trials (the paper's scheme); the batch
  size is random with mean ``sum p``.
* :func:`systematic_draw` -- systematic sampling in a random order; the batch size is exactly
  ``sum p`` when that is an integer (fixed shapes suit accelerators).

Random numbers come from a ``torch.Generator``.  They are drawn on the generator's device
(a CPU generator is the usual case) and the result is moved to the device of ``probs``, so the
same seed gives the same batch on every device.
"""
from __future__ import annotations

import math
import numbers

import torch

__all__ = [
    "poisson_draw",
    "systematic_draw",
    "SystematicDraws",
    "horvitz_thompson_weights",
    "check_probs",
]

# |sum p - round(sum p)| below this (relative to sum p) counts as an integer batch size:
# probabilities stored in float32 lose about 1e-7 of their sum.
_INTEGER_TOL = 1e-5


def check_probs(probs: object, name: str = "probs") -> None:
    """Raise ValueError unless ``probs`` is a 1-D floating tensor of values in ``(0, 1]``."""
    if not isinstance(probs, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(probs).__name__}")
    if probs.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(probs.shape)}")
    if not probs.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {probs.dtype}")
    outside = ~((probs > 0) & (probs <= 1))  # NaN compares False, so it is caught too
    if probs.numel() and bool(outside.any()):
        bad = probs[outside]
        raise ValueError(f"{name} must lie in (0, 1], got {bad.numel()} value(s) outside, "
                         f"e.g. {bad[0].item()}")


def _rng_device(generator: torch.Generator | None, probs: torch.Tensor) -> torch.device:
    return probs.device if generator is None else generator.device


def poisson_draw(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw each position independently with probability ``probs[i]`` (Poisson sampling).

    Parameters
    ----------
    probs : Tensor
        1-D floating tensor of inclusion probabilities in ``(0, 1]``.
    generator : torch.Generator, optional
        Source of randomness.  Uniforms are drawn on the generator's device and the result is
        moved to ``probs.device``.  Without it, the default generator of ``probs.device``.

    Returns
    -------
    LongTensor
        Sorted positions of the drawn nodes, on ``probs.device``.  Its length is random with
        mean ``probs.sum()``.

    Examples
    --------
    >>> import torch
    >>> from dgl_mvs.draws import poisson_draw
    >>> gen = torch.Generator().manual_seed(0)
    >>> idx = poisson_draw(torch.tensor([1.0, 0.5, 0.5, 1.0]), generator=gen)
    >>> bool(torch.isin(torch.tensor([0, 3]), idx).all())  # p = 1 is always drawn
    True
    """
    check_probs(probs)
    device = _rng_device(generator, probs)
    u = torch.rand(probs.numel(), generator=generator, device=device, dtype=probs.dtype)
    # u < p has probability p exactly for u uniform on [0, 1); p = 1 always passes.
    return torch.nonzero(u.to(probs.device) < probs, as_tuple=True)[0]


def systematic_draw(probs: torch.Tensor,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw a fixed-size batch by systematic sampling in a random order.

    Positions are shuffled; each takes an interval ("unit") of length ``p_i`` on the line, laid
    end to end.  One offset ``u ~ U[0, 1)`` is drawn and the units containing
    ``u, u + 1, u + 2, ...`` are taken.  A unit of length ``p_i <= 1`` contains one of these
    points with probability exactly ``p_i`` and never two, so inclusion probabilities are
    exactly ``probs`` and there are no repeats (up to floating-point rounding).

    Parameters
    ----------
    probs : Tensor
        1-D floating tensor of inclusion probabilities in ``(0, 1]``.
    generator : torch.Generator, optional
        Source of randomness (the shuffle and the offset), used on its own device; the result
        is moved to ``probs.device``.  Without it, the default generator of ``probs.device``.

    Returns
    -------
    LongTensor
        Sorted positions of the drawn nodes, on ``probs.device``.  When ``probs.sum()`` is an
        integer ``B`` (up to a relative ``1e-5``, the rounding of float32 probabilities) there
        are exactly ``B`` of them; otherwise ``floor`` or ``ceil`` of the sum, with mean equal
        to the sum.

    Notes
    -----
    Positions with ``p_i = 1`` are taken directly (their units have length zero), and when the
    sum is snapped to an integer the other units are rescaled by at most ``1e-5`` relative, so
    rounding can never make a unit longer than one.  The random order keeps joint inclusion
    from depending on node ids: in a fixed order, two neighbouring units with
    ``p_i + p_j <= 1`` could never be drawn together.

    Examples
    --------
    >>> import torch
    >>> from dgl_mvs.draws import systematic_draw
    >>> gen = torch.Generator().manual_seed(0)
    >>> probs = torch.tensor([0.5, 0.25, 0.25, 1.0, 0.5, 0.5])  # sums to 3
    >>> idx = systematic_draw(probs, generator=gen)
    >>> len(idx), bool((idx == 3).any())
    (3, True)
    """
    return SystematicDraws(probs, generator, num_chunks=1).draw(generator)


class SystematicDraws:
    """Repeated systematic draws from fixed probabilities, ``O(num_chunks + B log n)`` each.

    :func:`systematic_draw` shuffles all ``n`` positions for every draw.  When the same
    probabilities serve many draws (MVS freezes them between checkpoints), this class shuffles
    once, cuts that order into ``num_chunks`` contiguous chunks, and per draw only permutes the
    chunks before laying the units end to end.  Every position keeps inclusion probability
    exactly ``p_i`` (whatever the arrangement, a unit of length ``p_i <= 1`` meets one of the
    points ``u, u + 1, ...`` with probability ``p_i``); the chunk permutation varies which
    positions are drawn together from one draw to the next, and positions inside a chunk keep
    their relative order until the probabilities change.

    Parameters
    ----------
    probs : Tensor
        1-D floating tensor of inclusion probabilities in ``(0, 1]``.
    generator : torch.Generator, optional
        Source of the initial shuffle (on its own device).
    num_chunks : int, default 4096
        Chunks permuted per draw; 1 gives one order for all draws (a few tensor operations
        per draw: one offset, one ``searchsorted``).
    order : Tensor, optional
        The order of the units on the line, a permutation of ``range(n)`` drawn independently
        of ``probs`` (default: a shuffle from ``generator``).  Passing one lets several sets
        of probabilities share one shuffle; the marginals are exactly ``p`` for any order.

    Notes
    -----
    Given the order, successive draws are independent (each has its own offset), and each
    is unbiased whatever the order, so the estimates of two draws are uncorrelated even with
    one order for all of them (``num_chunks=1``): the order only decides which positions can
    be drawn together, not how often each one is.

    Examples
    --------
    >>> import torch
    >>> from dgl_mvs.draws import SystematicDraws
    >>> gen = torch.Generator().manual_seed(0)
    >>> draws = SystematicDraws(torch.full((1000,), 0.032), gen)
    >>> [len(draws.draw(gen)) for _ in range(3)]
    [32, 32, 32]
    """

    def __init__(self, probs: torch.Tensor, generator: torch.Generator | None = None,
                 num_chunks: int = 4096, order: torch.Tensor | None = None):
        check_probs(probs)
        if isinstance(num_chunks, bool) or not isinstance(num_chunks, int) or num_chunks < 1:
            raise ValueError(f"num_chunks must be a positive integer, got {num_chunks!r}")
        self.device = probs.device
        self.work = torch.float32 if probs.device.type == "mps" else torch.float64
        n = probs.numel()
        if order is None:
            rng_device = _rng_device(generator, probs)
            order = torch.randperm(n, generator=generator, device=rng_device)
        elif not isinstance(order, torch.Tensor) or order.dim() != 1 or order.numel() != n \
                or order.is_floating_point() or order.dtype == torch.bool:
            raise ValueError(
                f"order must be a 1-D integer tensor, a permutation of the {n} positions, got "
                f"{type(order).__name__} of shape {tuple(getattr(order, 'shape', ()))}"
            )
        self.order = order.to(device=self.device, dtype=torch.int64)
        q = probs[self.order].to(self.work)
        # p = 1 positions are taken directly; their units get length 0, which no point can hit.
        sure = q >= 1.0
        self.certain = self.order[sure]
        q.masked_fill_(sure, 0.0)
        self.total = float(q.sum()) if n else 0.0
        self.target = round(self.total)
        self.snapped = self.target > 0 and (
            abs(self.total - self.target) <= _INTEGER_TOL * max(1.0, self.total)
        )
        if self.snapped:
            # An integer size: rescale by at most 1e-5 relative, every unit shorter than 1.
            q.mul_(self.target / self.total).clamp_(max=math.nextafter(1.0, 0.0))
        self.cum = q.cumsum(0)
        # Points that rounding puts at or past the end of the line are kept just inside it.
        self._last_point = float(torch.nextafter(self.cum[-1], self.cum.new_zeros(()))) \
            if n else 0.0
        self._steps = torch.arange(math.ceil(self.total) if n else 0, dtype=self.work,
                                   device=self.device)
        chunks = max(1, min(num_chunks, n))
        bounds = torch.div(torch.arange(chunks + 1, device=self.device) * n, chunks,
                           rounding_mode="floor")
        self.chunk_first = bounds[:-1]
        self.chunk_last = bounds[1:] - 1
        upto = torch.cat([self.cum.new_zeros(1), self.cum])
        self.chunk_before = upto[self.chunk_first]
        self.chunk_mass = upto[bounds[1:]] - self.chunk_before

    def draw(self, generator: torch.Generator | None = None, sort: bool = True) -> torch.Tensor:
        """Positions of one systematic draw (see :func:`systematic_draw`).

        Sorted by default; ``sort=False`` leaves them in the random order of the line (the
        positions with ``p_i = 1`` first), which saves a sort when the order does not matter.
        """
        if self.total <= 0:
            return torch.sort(self.certain).values if sort else self.certain.clone()
        rng_device = self.device if generator is None else generator.device
        if self.chunk_mass.numel() == 1:
            u = torch.rand(1, generator=generator, device=rng_device, dtype=self.work)
            hit = self._line_hits(u.to(self.device))
        else:
            hit = self._chunk_hits(generator, rng_device)
        picked = self.order[hit]
        if self.certain.numel():
            picked = torch.cat([self.certain, picked])
        return torch.sort(picked).values if sort else picked

    def _points(self, u: torch.Tensor) -> torch.Tensor:
        """``u, u + 1, ...`` on a line of length ``end``: ``target`` of them when snapped."""
        if self.snapped:  # exactly `target` points u, u+1, ..., u+target-1
            return (self._steps[:self.target] + u).clamp_(max=self._last_point)
        points = self._steps + u  # floor or ceil of the total: those that fall on the line
        return points[points < float(self.cum[-1])]

    def _line_hits(self, u: torch.Tensor) -> torch.Tensor:
        """One order for every draw: the units (line positions) that the points fall in."""
        return torch.searchsorted(self.cum, self._points(u), right=True)

    def _chunk_hits(self, generator, rng_device) -> torch.Tensor:
        """Chunks permuted for this draw, then the units that the points fall in."""
        chunks = self.chunk_mass.numel()
        shuffle = torch.randperm(chunks, generator=generator, device=rng_device)
        shuffle = shuffle.to(self.device)
        mass = self.chunk_mass[shuffle]
        ends = mass.cumsum(0)
        u = torch.rand(1, generator=generator, device=rng_device, dtype=self.work)
        u = u.to(self.device)
        if self.snapped:
            points = u + self._steps[:self.target]
            # Rounding may leave the line a hair short: keep points on it.
            points = torch.minimum(points, torch.nextafter(ends[-1:], ends.new_zeros(1)))
        else:
            points = u + self._steps
            points = points[points < ends[-1]]
        # Which shuffled chunk each point falls in, then where inside that chunk's units.
        slot = torch.searchsorted(ends, points, right=True).clamp_(max=chunks - 1)
        chunk = shuffle[slot]
        offset = points - (ends[slot] - mass[slot])
        hit = torch.searchsorted(self.cum, self.chunk_before[chunk] + offset, right=True)
        return torch.minimum(torch.maximum(hit, self.chunk_first[chunk]),
                             self.chunk_last[chunk])


def horvitz_thompson_weights(probs_of_drawn: torch.Tensor, pool_size: int) -> torch.Tensor:
    """Horvitz-Thompson weights ``1 / (p_i * pool_size)`` for the drawn nodes.

    With these weights ``sum_{i in batch} w_i * loss_i`` is an unbiased estimate of the mean
    loss over the pool.  Uniform probabilities ``B / pool_size`` give ``w_i = 1 / B``, the
    ordinary batch mean.

    Parameters
    ----------
    probs_of_drawn : Tensor
        1-D floating tensor, the inclusion probabilities of the drawn nodes, in ``(0, 1]``.
    pool_size : int
        Number of candidate nodes the batch was drawn from (``|V_S|``).

    Returns
    -------
    Tensor
        Weights with the dtype and device of ``probs_of_drawn``.

    Examples
    --------
    >>> import torch
    >>> from dgl_mvs.draws import horvitz_thompson_weights
    >>> horvitz_thompson_weights(torch.tensor([0.5, 0.25]), pool_size=8)
    tensor([0.2500, 0.5000])
    """
    check_probs(probs_of_drawn, "probs_of_drawn")
    if isinstance(pool_size, bool) or not isinstance(pool_size, numbers.Integral) \
            or pool_size <= 0:
        raise ValueError(f"pool_size must be a positive integer, got {pool_size!r}")
    return 1.0 / (probs_of_drawn * float(pool_size))
