"""Spawned gloo ranks for the DDP tests, with deadlines: a hung rank fails the test with its
stack instead of holding up the suite (a mismatched collective otherwise waits forever)."""
import datetime
import faulthandler
import os
import signal
import time

import pytest
import torch
import torch.multiprocessing as mp

COLLECTIVE_TIMEOUT_S = 120  # gloo raises in a collective that waits longer than this


def init_rank(rank: int, world_size: int, init_file: str) -> None:
    """The start of every spawned rank: one thread, stacks on SIGUSR1, a gloo group."""
    os.environ.setdefault("DGLBACKEND", "pytorch")
    torch.set_num_threads(1)
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size,
        timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S),
    )


def spawn_ranks(worker, world_size: int, args: tuple, timeout: float = 400.0) -> None:
    """Run ``worker(rank, *args)`` in ``world_size`` spawned processes; fail after ``timeout``.

    A rank that raises fails the test with its traceback (torch's ProcessRaisedException); one
    still running at the deadline prints its threads' stacks (SIGUSR1) and is killed.
    """
    context = mp.start_processes(worker, args=args, nprocs=world_size, start_method="spawn",
                                 join=False)
    deadline = time.monotonic() + timeout
    while not context.join(timeout=1.0):
        if time.monotonic() > deadline:
            alive = [r for r, p in enumerate(context.processes) if p.is_alive()]
            for r in alive:
                os.kill(context.processes[r].pid, signal.SIGUSR1)
            time.sleep(2.0)
            for p in context.processes:
                if p.is_alive():
                    p.kill()
            pytest.fail(f"ranks {alive} of {world_size} still running after {timeout:.0f} s "
                        "(their stacks are in the captured stderr)")
