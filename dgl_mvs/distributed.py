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

The sampler's collectives run on a gloo process group of its own (:func:`sampler_group`,
created at construction), whatever the default group's backend, with a bounded wait: a rank
whose peer skipped ``update_scores`` or stopped gets an :class:`ExchangeError` naming the
cause after the sampler's ``ddp_timeout`` (or as soon as the peer's process exits), instead
of hanging until the job's collective timeout.  Every message starts with a header
``[kind, step, tag, count]`` and has a size fixed by the sampler's arguments (which the
construction checks are the same on every rank, :func:`agree_on_arguments`), so ranks in
different exchanges read each other's headers and say so, instead of mismatched sizes
aborting inside the backend.

Cost per step: one ``all_gather`` of ``4 + 2 B`` float64 values per rank (``16 B + 32``
bytes), i.e. ``R * (16 B + 32)`` bytes received per rank, plus one ``index_put`` of ``R * B``
rows into the table.  ``benchmarks/bench_ddp.py`` measures it.
"""
from __future__ import annotations

import datetime
import math
import numbers
import zlib

import torch
from torch import Tensor

__all__ = ["process_group_place", "rank_share", "exchange_rows", "gather_rows",
           "draw_fingerprint", "sampler_group", "agree_on_arguments", "ExchangeError"]

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


def _collective_device(group=None) -> torch.device:
    dist = torch.distributed
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def sampler_group(timeout: float):
    """A process group of every rank for a sampler's collectives, with a bounded wait.

    gloo (CPU tensors, any number of hosts) where available, whatever the default group's
    backend: a collective that waits longer than ``timeout`` seconds for a rank raises a
    Python error (NCCL's watchdog would abort the process instead).  Creating it is a
    collective of the default group, bounded by the same timeout.
    """
    dist = torch.distributed
    backend = "gloo" if dist.is_gloo_available() else dist.get_backend()
    try:
        return dist.new_group(backend=backend, timeout=datetime.timedelta(seconds=timeout))
    except RuntimeError as err:
        raise RuntimeError(
            f"rank {dist.get_rank()} waited {timeout:.0f} s for the other ranks to build the "
            "sampler: under torch.distributed every rank builds it, at the same point of the "
            f"program ({err})"
        ) from err


class ExchangeError(RuntimeError):
    """A collective of the sampler failed: a rank is elsewhere, gone, or timed out."""


#: Header of every exchanged message: [kind, step, tag, count].
_HEADER = 4
#: Kinds of exchanges, so that ranks in different ones report it instead of mixing them.
EXCHANGES = {1: "the scores of a step (update_scores)", 2: "a score refresh (refresh_scores)",
             3: "the arguments of a new sampler"}


def _all_gather(packed: Tensor, group, what: str) -> Tensor:
    dist = torch.distributed
    gathered = [torch.empty_like(packed) for _ in range(dist.get_world_size(group))]
    try:
        dist.all_gather(gathered, packed, group=group)
    except RuntimeError as err:
        raise ExchangeError(
            f"rank {dist.get_rank()}'s exchange of {what} with the other ranks failed: a rank "
            "skipped it (every rank must call update_scores after every step, and "
            "refresh_scores together), stopped with an error, or spent longer than the "
            f"sampler's ddp_timeout elsewhere ({err})"
        ) from err
    return torch.stack(gathered).cpu()


def exchange_rows(nodes: Tensor, values: Tensor, max_rows: int, tag: float = 0.0, *,
                  kind: int = 1, step: int = -1,
                  group=None) -> tuple[Tensor, Tensor, Tensor]:
    """All ranks' ``(nodes, values)`` rows, and every rank's ``tag``, from one ``all_gather``.

    Parameters
    ----------
    nodes, values : Tensor
        This rank's rows: node IDs and their (float32 or float64) values.
    max_rows : int
        The same number on every rank (a collective needs equal sizes): the first message
        carries up to ``max_rows`` rows per rank, padded; when a rank has more, a second one
        carries the rest (its size is agreed from the first).
    tag : float
        A number sent along (e.g. :func:`draw_fingerprint` of the step's global draw), returned
        per rank so that the caller can check that the ranks agree.
    kind, step : int
        What is exchanged (a key of :data:`EXCHANGES`) and for which step: ranks that are in
        different exchanges get an :class:`ExchangeError` saying so instead of mixed rows.
    group : ProcessGroup, optional
        The group to exchange on (default: the default group).

    Returns
    -------
    (nodes, values, tags)
        The rows of all ranks in rank order (int64 node IDs on ``nodes.device``, float64
        values), and the ``world_size`` tags (float64).
    """
    count = int(nodes.numel())
    device = _collective_device(group)
    what = f"{EXCHANGES.get(kind, 'rows')} for step {step}"
    # One float64 message: [kind, step, tag, count, ids (exact below 2^53), values].
    first = min(count, max_rows)
    packed = torch.zeros(_HEADER + 2 * max_rows, dtype=torch.float64, device=device)
    packed[:_HEADER] = torch.tensor([kind, step, float(tag), count], dtype=torch.float64)
    packed[_HEADER:_HEADER + first] = nodes[:first].detach().to(device, torch.float64)
    packed[_HEADER + max_rows:_HEADER + max_rows + first] = \
        values[:first].detach().to(device, torch.float64)
    rows = _all_gather(packed, group, what)
    check_same_exchange(rows[:, :2], kind, step)
    tags, counts = rows[:, 2], rows[:, 3].long()
    ids, vals = rows[:, _HEADER:_HEADER + max_rows], rows[:, _HEADER + max_rows:]
    rest = int(counts.max()) - max_rows
    if rest > 0:  # every rank knows the size of the second message from the first
        extra = torch.zeros(2 * rest, dtype=torch.float64, device=device)
        more = max(0, count - max_rows)
        extra[:more] = nodes[max_rows:].detach().to(device, torch.float64)
        extra[rest:rest + more] = values[max_rows:].detach().to(device, torch.float64)
        extra_rows = _all_gather(extra, group, what)
        ids = torch.cat([ids, extra_rows[:, :rest]], 1)
        vals = torch.cat([vals, extra_rows[:, rest:]], 1)
    keep = torch.arange(ids.shape[1])[None, :] < counts[:, None]
    return ids[keep].long().to(nodes.device), vals[keep], tags


def check_same_exchange(kinds_steps: Tensor, kind: int, step: int) -> None:
    """Raise :class:`ExchangeError` unless every rank's ``[kind, step]`` equals this rank's."""
    same = (kinds_steps[:, 0] == kind) & (kinds_steps[:, 1] == step)
    if bool(same.all()):
        return
    where = "; ".join(
        f"rank {r}: {EXCHANGES.get(int(k), 'an unknown exchange')} for step {int(s)}"
        for r, (k, s) in enumerate(kinds_steps.tolist())
    )
    raise ExchangeError(
        f"the ranks are in different exchanges ({where}): every rank must call "
        "sampler.update_scores(blocks, scores) once after every step, and refresh_scores at "
        "the same steps"
    )


def _encode(value) -> float:
    """A number standing for ``value`` (equal values, equal numbers) in a float64 message."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, numbers.Integral) and abs(int(value)) < 1 << 52:
        return float(value)
    if isinstance(value, numbers.Real) and math.isfinite(value) and not isinstance(
            value, numbers.Integral):
        return float(value)
    if torch.is_tensor(value):
        value = (tuple(value.shape), draw_fingerprint(value.reshape(-1)))
    return float(zlib.crc32(repr(value).encode()) + (1 << 40))


def agree_on_arguments(arguments: dict, group) -> Tensor:
    """Check that every rank built its sampler with the same ``arguments``; one collective.

    Returns the ``(world_size, len(arguments))`` table of the encoded values (rank ``r``'s in
    row ``r``, in the order of ``arguments``).  Raises ValueError naming each argument that
    differs, with every rank's value where it is a number, on every rank.
    """
    dist = torch.distributed
    names = list(arguments)
    mine = torch.tensor([_encode(arguments[n]) for n in names], dtype=torch.float64)
    packed = torch.cat([torch.tensor([3.0, -1.0, 0.0, len(names)], dtype=torch.float64), mine])
    rows = _all_gather(packed.to(_collective_device(group)), group, EXCHANGES[3])
    check_same_exchange(rows[:, :2], 3, -1)
    if int(rows[:, 3].min()) != len(names) or int(rows[:, 3].max()) != len(names):
        raise ValueError("the ranks run different versions of dgl_mvs")
    table = rows[:, _HEADER:]
    return table


def differing_arguments(arguments: dict, table: Tensor) -> list[str]:
    """``name (rank 0: a, rank 1: b)`` for every argument whose encoded values differ."""
    out = []
    for column, name in enumerate(arguments):
        values = table[:, column]
        if bool((values == values[0]).all()):
            continue
        value = arguments[name]
        if bool((values.abs() < 1 << 40).all()):  # numbers on every rank: show them
            shown = ", ".join(f"rank {r}: {v:g}" for r, v in enumerate(values.tolist()))
        else:
            if torch.is_tensor(value):
                value = f"{value.numel()} values"
            shown = f"rank {torch.distributed.get_rank()}: {value!r}, not the same on every rank"
        out.append(f"{name} ({shown})")
    return out


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
