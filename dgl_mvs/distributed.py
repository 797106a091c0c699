"""One sampler across data-parallel ranks: a shared global draw and exchanged score rows.

With ``torch.distributed`` initialised and ``world_size = R > 1``, every rank of an
:class:`dgl_mvs.MVSSampler` runs the same global step at the same time (DDP's lockstep) and

* draws the *same* sample of ``R * B`` seeds from the same probabilities, with generators
  seeded by ``(seed, step)`` only, never the rank, and keeps its own share of it
  (:func:`rank_share`: a random split of the drawn positions into ``R`` parts of ``B``).  The
  union over the ranks is exactly the sample that one sampler of batch size ``R * B`` would
  draw, so every training node has the inclusion probability a single sampler gives it, and
  the ranks' seeds are disjoint;
* multiplies the Horvitz-Thompson weights ``1 / (p_i n)`` of its seeds by ``R``: DDP averages
  the ranks' gradients, so the average of the ranks' weighted losses is the single sampler's
  estimate ``sum_{i in sample} loss_i / (p_i n)``;
* after each step sends the score rows it wrote (node IDs and scores) to every other rank
  (:func:`exchange_rows`, one ``all_gather``), and writes all ranks' rows into its table, so
  that the score tables stay identical on every rank (and so do the probabilities computed
  from them).  A score refresh is split the same way: each rank scores its share of the
  training nodes and the rows are exchanged.

The exchange is a collective that works with every backend (gloo across hosts, nccl on GPUs):
it needs no shared memory, and ranks on one host exchange through it too.

Cost per step: one ``all_gather`` of ``2 + 2 * ceil(R B / R)`` float64 values per rank
(``16 B + 16`` bytes), i.e. ``R * (16 B + 16)`` bytes received per rank, plus one
``index_put`` of ``R * B`` rows into the table.  ``benchmarks/bench_ddp.py``
measures it.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["process_group_place", "rank_share", "exchange_rows", "gather_rows",
           "draw_fingerprint"]

# Fingerprints of a drawn set: sum of hashed node IDs modulo a Mersenne prime (exact in
# float64 for any batch of fewer than 2^22 nodes).
_PRIME = (1 << 31) - 1


def process_group_place() -> tuple[int, int]:
    """``(rank, world_size)`` under ``torch.distributed``, ``(0, 1)`` without it."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def rank_share(count: int, world_size: int, rank: int, generator: torch.Generator) -> Tensor:
    """Sorted positions ``[0, count)`` that ``rank`` keeps of a draw of ``count`` positions.

    A random permutation (the same on every rank: ``generator`` is seeded without the rank)
    cut into ``world_size`` contiguous parts of ``ceil`` or ``floor`` of ``count /
    world_size``: every rank's share is a uniformly random subset of the global sample, so no
    rank is biased towards low node IDs or high scores.
    """
    order = torch.randperm(count, generator=generator)
    return torch.sort(torch.tensor_split(order, world_size)[rank]).values


def draw_fingerprint(nodes: Tensor) -> int:
    """A number identifying the set ``nodes`` (order-free): ranks compare their global draws."""
    hashed = (nodes.detach().cpu().long() * 2654435761 + 97) % _PRIME
    return int(hashed.sum()) % _PRIME


def _collective_device() -> torch.device:
    dist = torch.distributed
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def exchange_rows(nodes: Tensor, values: Tensor, max_rows: int,
                  tag: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
    """All ranks' ``(nodes, values)`` rows, and every rank's ``tag``, from one ``all_gather``.

    Parameters
    ----------
    nodes, values : Tensor
        This rank's rows: node IDs and their (float32 or float64) values, at most
        ``max_rows`` of them.
    max_rows : int
        The same bound on every rank (a collective needs equal sizes): rows are padded to it.
    tag : float
        A number sent along (e.g. :func:`draw_fingerprint` of the step's global draw), returned
        per rank so that the caller can check that the ranks agree.

    Returns
    -------
    (nodes, values, tags)
        The rows of all ranks in rank order (int64 node IDs on ``nodes.device``, float64
        values), and the ``world_size`` tags (float64).
    """
    dist = torch.distributed
    world_size = dist.get_world_size()
    count = int(nodes.numel())
    if count > max_rows:
        raise RuntimeError(f"{count} rows to exchange, more than the bound {max_rows}")
    device = _collective_device()
    # One float64 message: [tag, count, ids (exact below 2^53), values], padded to max_rows.
    packed = torch.zeros(2 + 2 * max_rows, dtype=torch.float64, device=device)
    packed[0] = float(tag)
    packed[1] = float(count)
    packed[2:2 + count] = nodes.detach().to(device=device, dtype=torch.float64)
    packed[2 + max_rows:2 + max_rows + count] = values.detach().to(device, torch.float64)
    gathered = [torch.empty_like(packed) for _ in range(world_size)]
    dist.all_gather(gathered, packed)
    rows = torch.stack(gathered).cpu()
    tags = rows[:, 0]
    counts = rows[:, 1].long()
    keep = torch.arange(max_rows)[None, :] < counts[:, None]
    all_nodes = rows[:, 2:2 + max_rows][keep].long().to(nodes.device)
    all_values = rows[:, 2 + max_rows:][keep]
    return all_nodes, all_values, tags


def gather_rows(rows: Tensor) -> Tensor:
    """All ranks' ``rows`` (any number of rows, the same trailing shape and dtype everywhere),
    concatenated in rank order: two ``all_gather`` calls (the counts, then the padded rows).
    """
    dist = torch.distributed
    world_size = dist.get_world_size()
    device = _collective_device()
    count = torch.tensor([rows.shape[0]], dtype=torch.int64, device=device)
    counts = [torch.empty_like(count) for _ in range(world_size)]
    dist.all_gather(counts, count)
    counts = [int(c) for c in counts]
    padded = torch.zeros((max(counts),) + tuple(rows.shape[1:]), dtype=rows.dtype,
                         device=device)
    padded[:rows.shape[0]] = rows.to(device)
    gathered = [torch.empty_like(padded) for _ in range(world_size)]
    dist.all_gather(gathered, padded)
    return torch.cat([g[:c] for g, c in zip(gathered, counts)]).to(rows.device)


def share_bound(count: int, world_size: int) -> int:
    """Largest share of ``count`` rows that one rank gets (:func:`rank_share`'s split)."""
    return math.ceil(count / world_size)
