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
        Chunks permuted per draw; 1 gives one shuffle for all draws.

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
                 num_chunks: int = 4096):
        check_probs(probs)
        if num_chunks < 1:
            raise ValueError(f"num_chunks must be positive, got {num_chunks}")
        self.device = probs.device
        self.work = torch.float32 if probs.device.type == "mps" else torch.float64
        n = probs.numel()
        rng_device = _rng_device(generator, probs)
        self.order = torch.randperm(n, generator=generator, device=rng_device).to(self.device)
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
        chunks = max(1, min(num_chunks, n))
        bounds = torch.div(torch.arange(chunks + 1, device=self.device) * n, chunks,
                           rounding_mode="floor")
        self.chunk_first = bounds[:-1]
        self.chunk_last = bounds[1:] - 1
        upto = torch.cat([self.cum.new_zeros(1), self.cum])
        self.chunk_before = upto[self.chunk_first]
        self.chunk_mass = upto[bounds[1:]] - self.chunk_before

    def draw(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Sorted positions of one systematic draw (see :func:`systematic_draw`)."""
        if self.total <= 0:
            return torch.sort(self.certain).values
        rng_device = self.device if generator is None else generator.device
        chunks = self.chunk_mass.numel()
        if chunks > 1:
            shuffle = torch.randperm(chunks, generator=generator, device=rng_device)
            shuffle = shuffle.to(self.device)
        else:
            shuffle = torch.zeros(1, dtype=torch.long, device=self.device)
        mass = self.chunk_mass[shuffle]
        ends = mass.cumsum(0)
        u = torch.rand(1, generator=generator, device=rng_device, dtype=self.work)
        u = u.to(self.device)
        if self.snapped:  # exactly `target` points u, u+1, ..., u+target-1
            points = u + torch.arange(self.target, dtype=self.work, device=self.device)
            # Rounding may leave the line a hair short: keep points on it.
            points = torch.minimum(points, torch.nextafter(ends[-1:], ends.new_zeros(1)))
        else:  # floor or ceil of the total, whichever of u + j fall on the line
            points = u + torch.arange(math.ceil(self.total), dtype=self.work,
                                      device=self.device)
            points = points[points < ends[-1]]
        # Which shuffled chunk each point falls in, then where inside that chunk's units.
        slot = torch.searchsorted(ends, points, right=True).clamp_(max=chunks - 1)
        chunk = shuffle[slot]
        offset = points - (ends[slot] - mass[slot])
        hit = torch.searchsorted(self.cum, self.chunk_before[chunk] + offset, right=True)
        hit = torch.minimum(torch.maximum(hit, self.chunk_first[chunk]), self.chunk_last[chunk])
        return torch.sort(torch.cat([self.certain, self.order[hit]])).values


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
