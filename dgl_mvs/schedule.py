"""The step schedule of :class:`dgl_mvs.MVSSampler`: epochs, steps, intervals, workers, ranks.

The sampler's DataLoader indices are step numbers (as with DGL's ``SAINTSampler``).
:class:`StepSchedule` turns the index a DataLoader hands to a worker into the global step that
the training loop will see, knows which steps are checkpoints, where a resumed run starts, and
seeds a generator per step so that worker processes and DDP ranks draw the same batches
without coordination.

DGL decides which indices reach which worker process and which rank; the schedule has to agree
with it.  That coupling lives in two functions, :func:`dataloader_worker_share` and
:func:`ddp_share`, which mirror DGL 2.1's private ``_divide_by_worker`` and
``_decompose_one_dimension`` (``dgl/dataloading/dataloader.py``) for the loader that the
schedule asks for: ``batch_size=1``, ``shuffle=False``, ``drop_last=False``.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["StepSchedule", "dataloader_worker_share", "ddp_share", "step_generator"]

_MASK64 = (1 << 64) - 1


def _mix(*values: int) -> int:
    """Deterministic 63-bit seed from integers (splitmix64 rounds): one stream per step."""
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = (state ^ (int(value) & _MASK64)) & _MASK64
        state = (state * 0xBF58476D1CE4E5B9) & _MASK64
        state ^= state >> 31
        state = (state * 0x94D049BB133111EB) & _MASK64
        state ^= state >> 29
    return state & ((1 << 63) - 1)


def step_generator(*values: int) -> torch.Generator:
    """A CPU generator seeded from ``values`` alone, e.g. ``(seed, rank, step, stream)``."""
    return torch.Generator().manual_seed(_mix(*values))


# ---------------------------------------------------------------------- the DGL coupling
def _several_workers() -> bool:
    info = torch.utils.data.get_worker_info()
    return info is not None and info.num_workers > 1


def dataloader_worker_share(num_indices: int) -> tuple[int, int, int, int] | None:
    """``(worker id, number of workers, begin, end)`` of this worker's share of the indices.

    ``None`` in the main process and with a single worker.  Mirrors DGL's
    ``_divide_by_worker`` for ``batch_size=1``: every worker gets a contiguous share, the first
    ``num_indices % num_workers`` workers one index more, and the DataLoader returns batches
    round-robin over the workers.
    """
    if not _several_workers():
        return None
    info = torch.utils.data.get_worker_info()
    per_worker, left_over = divmod(num_indices, info.num_workers)
    begin = per_worker * info.id + min(left_over, info.id)
    end = begin + per_worker + (info.id < left_over)
    return info.id, info.num_workers, begin, end


def ddp_share(num_indices: int, world_size: int, rank: int) -> tuple[int, int]:
    """``(first index, number of indices)`` of ``rank`` under DGL's ``use_ddp=True`` split.

    Mirrors DGL's ``_decompose_one_dimension`` with ``drop_last=False``: contiguous shares of
    ``ceil(num_indices / world_size)`` indices.
    """
    if world_size == 1:
        return 0, num_indices
    share = math.ceil(num_indices / world_size)
    return rank * share, share


# ---------------------------------------------------------------------- the schedule
class StepSchedule:
    """Epochs of steps, checkpoint intervals and the resume point, shared with workers.

    Parameters
    ----------
    steps_per_epoch : int
        Steps per epoch over all ranks; rounded up to a multiple of ``world_size`` so that every
        rank runs as many steps.
    interval : int
        Steps per interval: the probabilities are fixed for an interval.
    checkpoints : bool
        Whether the first step of every interval is a checkpoint step (Algorithm 1's ``K``).
    seed, rank, world_size : int
        The seed of all draws and this process's place among the DDP ranks.
    """

    def __init__(self, steps_per_epoch: int, interval: int, checkpoints: bool, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        self.steps_per_epoch = math.ceil(steps_per_epoch / world_size) * world_size
        self.interval = interval
        self.checkpoints = checkpoints
        self.seed = int(seed)
        self.rank = rank
        self.world_size = world_size
        # Shared memory: persistent worker processes see set_epoch and a resume.
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        # First step of the current epoch's list: non-zero only when resuming mid-epoch.
        self._start = torch.zeros(1, dtype=torch.int64).share_memory_()
        self.resume_epoch = -1
        self._last_drawn: int | None = None

    @classmethod
    def for_this_process(cls, steps_per_epoch: int, interval: int, checkpoints: bool,
                         seed: int = 0) -> "StepSchedule":
        """A schedule for this process's rank under ``torch.distributed`` (rank 0 of 1 without)."""
        dist = torch.distributed
        distributed = dist.is_available() and dist.is_initialized()
        rank = dist.get_rank() if distributed else 0
        world_size = dist.get_world_size() if distributed else 1
        return cls(steps_per_epoch, interval, checkpoints, seed, rank, world_size)

    # ------------------------------------------------------------------ epochs
    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    @property
    def start(self) -> int:
        """Position in the epoch of its first remaining step (0 unless resuming mid-epoch)."""
        return int(self._start[0])

    @property
    def local_steps(self) -> int:
        """Steps per epoch of this rank."""
        return ddp_share(self.steps_per_epoch, self.world_size, self.rank)[1]

    def set_epoch(self, epoch: int) -> None:
        """Enter ``epoch``; the epoch a resumed run stopped in keeps its resume point."""
        if epoch != self.resume_epoch:
            self._start[0] = 0
            self.resume_epoch = -1
        self._epoch[0] = int(epoch)

    def resume(self, next_step: int) -> None:
        """Continue at global step ``next_step`` (from a saved state)."""
        epoch, start = divmod(int(next_step), self.local_steps)
        self._epoch[0] = epoch
        self._start[0] = start
        self.resume_epoch = epoch if start > 0 else -1

    def epoch_of(self, step: int) -> int:
        return step // self.local_steps

    # ------------------------------------------------------------------ steps
    def step_ids(self) -> Tensor:
        """DataLoader indices of the current epoch's remaining steps, all ranks together.

        With ``use_ddp=True`` DGL cuts this list into equal contiguous shares, one per rank:
        every rank's share maps to the same global steps (:meth:`global_step`), which the
        ranks run in lockstep, each drawing its share of every step's global sample.
        """
        start, share = self.start, self.local_steps
        ids = [torch.arange(rank * share + start, (rank + 1) * share)
               for rank in range(self.world_size)]
        return torch.cat(ids)

    def global_step(self, index: int) -> int:
        """Global step of the DataLoader index ``index`` of the current epoch.

        The step is the batch's position in the order the DataLoader returns batches
        (round-robin over its workers), so that steps reach the training loop in order
        whatever the number of workers.  With ``use_ddp=True`` every rank's share of the
        indices gives the same steps ``0, 1, ...`` of the epoch: the ranks run them together.
        """
        first, count = ddp_share(self.steps_per_epoch, self.world_size, self.rank)
        start = self.start
        position = int(index) - first - start
        worker = dataloader_worker_share(count - start)
        if worker is not None:
            worker_id, num_workers, begin, end = worker
            if not begin <= position < end:
                raise ValueError(
                    f"worker {worker_id} received step index {index} outside its share: build "
                    "the DataLoader with sampler.step_ids() as indices, batch_size=1 and "
                    "shuffle=False"
                )
            position = (position - begin) * num_workers + worker_id
        position += start
        if not start <= position < count:
            raise ValueError(
                f"step index {index} is outside this sampler's epoch of {count} steps: use "
                "sampler.step_ids() as the DataLoader's indices"
            )
        return self.epoch * count + position

    def check_order(self, step: int) -> None:
        """Refuse steps out of order (a shuffling DataLoader moves checkpoints and intervals).

        A DataLoader worker draws its steps in sequence: a single worker every step from the
        epoch's first remaining one, each of ``n`` workers every ``n``-th from its own first
        one.  That is checked before anything is drawn, so that a shuffled loader fails at
        once instead of waiting for probabilities that training has not reached.  The main
        process (whose draws never wait) refuses only a step that goes back in an epoch.
        """
        first = self.epoch * self.local_steps + self.start
        last = self._last_drawn
        info = torch.utils.data.get_worker_info()
        if info is None:
            self._last_drawn = step
            if last is None or step == first or step > last \
                    or step // self.steps_per_epoch != last // self.steps_per_epoch:
                return
        else:
            stride = info.num_workers if _several_workers() else 1
            first += info.id if _several_workers() else 0
            if step == first or last is not None and step == last + stride:
                self._last_drawn = step
                return
        raise ValueError(
            f"MVSSampler received step {step} after step {last}: its DataLoader must not "
            "shuffle (the step numbers are the schedule, and the seeds are drawn at random "
            "already). Build it as DataLoader(g, sampler.step_ids(), sampler) with "
            "shuffle=False."
        )

    # ------------------------------------------------------------------ intervals
    def interval_of(self, step: int) -> int:
        return step // self.interval

    def is_checkpoint(self, step: int) -> bool:
        """Whether global step ``step`` is a checkpoint step (never without checkpoints)."""
        return self.checkpoints and step % self.interval == 0

    def generator(self, *values: int) -> torch.Generator:
        """The generator of stream ``values`` (e.g. ``(step, 2)``) of this seed and rank."""
        return step_generator(self.seed, self.rank, *values)

    def shared_generator(self, *values: int) -> torch.Generator:
        """The generator of stream ``values`` that every rank shares (rank 0's stream).

        The global draws (pools, seeds, their split among the ranks) come from it, so that
        all ranks draw the same global sample; with one process it is :meth:`generator`.
        """
        return step_generator(self.seed, 0, *values)

    def __repr__(self) -> str:
        return (f"StepSchedule(steps_per_epoch={self.steps_per_epoch}, interval={self.interval}, "
                f"checkpoints={self.checkpoints}, rank={self.rank}/{self.world_size})")
