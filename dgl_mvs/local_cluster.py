"""A DistDGL job of several machines simulated on this host (tests, examples, laptops).

DistDGL maps one partition to one machine: each machine runs the servers of its partition,
which publish the partition in shared memory under fixed names, and trainers find their
machine by matching their IP address with ``ip_config``.  Two "machines" on one host would
overwrite each other's shared memory and both find machine 0.  So each simulated machine runs
in its own mount namespace with a private ``/dev/shm`` (``unshare -Urm``, no root needed where
user namespaces are allowed), and its trainers are told their machine ID
(``DGL_MVS_MACHINE_ID``, read by :func:`initialize`).  Everything talks over 127.0.0.1.

On a real cluster none of this is used: DGL's ``tools/launch.py`` starts servers and trainers
on each machine and trainers call ``dgl.distributed.initialize`` (:func:`initialize` does
exactly that when ``DGL_MVS_MACHINE_ID`` is unset).

Run ``python -m dgl_mvs.local_cluster --help`` for the command line.
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import Sequence

__all__ = ["initialize", "namespace_prefix", "run_local_cluster"]

MACHINE_ENV = "DGL_MVS_MACHINE_ID"


def initialize(ip_config: str) -> None:
    """``dgl.distributed.initialize(ip_config)``, on the machine ``DGL_MVS_MACHINE_ID`` names."""
    import dgl
    machine = os.environ.get(MACHINE_ENV)
    if machine is not None:
        from dgl.distributed import rpc_client
        rpc_client.get_local_machine_id = lambda namebook: int(machine)
    dgl.distributed.initialize(ip_config)


def namespace_prefix() -> list[str]:
    """The command prefix that gives a process tree its own ``/dev/shm``, or an error."""
    tried = []
    for flags in (["-Urm"], ["-m"]):
        probe = ["unshare", *flags, "sh", "-c", "mount -t tmpfs tmpfs /dev/shm"]
        if shutil.which("unshare"):
            done = subprocess.run(probe, capture_output=True, text=True)
            if done.returncode == 0:
                return ["unshare", *flags, "sh", "-c"]
            tried.append(f"unshare {' '.join(flags)}: {done.stderr.strip()}")
        else:
            tried.append("no unshare command (util-linux)")
    raise RuntimeError(
        "simulating several DistDGL machines on one host needs a private /dev/shm per machine "
        "(a mount namespace), and none could be made here: " + "; ".join(tried)
        + ". Run on several machines with DGL's tools/launch.py, or allow user namespaces"
    )


def _free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def run_local_cluster(part_config: str, trainer_command: Sequence[str], *,
                      trainers_per_machine: int = 1, workdir: str | None = None,
                      timeout: float = 600.0, env: dict | None = None) -> list[int]:
    """Run ``trainer_command`` as the trainers of a DistDGL job, one machine per partition.

    Each machine (a private ``/dev/shm``) runs one DGL graph server for its partition and
    ``trainers_per_machine`` trainers; the trainers get DGL's environment
    (``DGL_ROLE=client``, ``DGL_IP_CONFIG``, ...), ``torch.distributed``'s (``RANK``,
    ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``, ranks numbered machine by machine as
    ``launch.py`` does) and ``DGL_MVS_MACHINE_ID``; they must call :func:`initialize` with
    ``os.environ["DGL_IP_CONFIG"]``.  Returns each machine's exit code (the largest of its
    trainers'; servers stop when their trainers have called
    ``dgl.distributed.exit_client``).  When a machine fails, or at the deadline, every
    process of the job is killed.
    """
    import json
    with open(part_config) as f:
        num_parts = int(json.load(f)["num_parts"])
    workdir = workdir or os.path.dirname(os.path.abspath(part_config))
    prefix = namespace_prefix()
    ports = _free_ports(num_parts + 1)
    ip_config = os.path.join(workdir, "ip_config.txt")
    with open(ip_config, "w") as f:
        f.write("".join(f"127.0.0.1 {port}\n" for port in ports[:num_parts]))
    world_size = num_parts * trainers_per_machine
    base = dict(os.environ if env is None else env)
    base.update(DGL_DIST_MODE="distributed", DGL_IP_CONFIG=ip_config, DGL_NUM_SERVER="1",
                DGL_NUM_CLIENT=str(world_size), DGL_CONF_PATH=os.path.abspath(part_config),
                DGL_NUM_SAMPLER="0", DGL_GRAPH_FORMAT="csc", DGLBACKEND="pytorch",
                MASTER_ADDR="127.0.0.1", MASTER_PORT=str(ports[-1]), WORLD_SIZE=str(world_size))
    machines = []
    for machine in range(num_parts):
        args = [sys.executable, "-m", "dgl_mvs.local_cluster", "machine", str(machine),
                str(trainers_per_machine), "--", *trainer_command]
        script = "mount -t tmpfs tmpfs /dev/shm && exec " + " ".join(shlex.quote(a) for a in args)
        # A session of its own: the whole machine (server, trainers) can be stopped at once.
        machines.append(subprocess.Popen([*prefix, script], start_new_session=True,
                                         env=dict(base, **{MACHINE_ENV: str(machine)})))
    deadline = time.monotonic() + timeout
    try:
        while any(proc.poll() is None for proc in machines):
            failed = [proc for proc in machines if proc.poll() not in (None, 0)]
            if failed:  # the others would wait for it in a collective: stop them
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the local DistDGL job ran past {timeout:.0f} s")
            time.sleep(0.2)
    finally:
        for proc in machines:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
    return [proc.returncode for proc in machines]


def _machine(machine: int, trainers: int, command: list[str]) -> int:
    """Inside one machine's namespace: its graph server, then its trainers."""
    server = subprocess.Popen(
        [sys.executable, "-c",
         "import os, dgl; dgl.distributed.initialize(os.environ['DGL_IP_CONFIG'])"],
        env=dict(os.environ, DGL_ROLE="server", DGL_SERVER_ID=str(machine)),
    )
    procs = [
        subprocess.Popen(command, env=dict(os.environ, DGL_ROLE="client",
                                           RANK=str(machine * trainers + t), LOCAL_RANK=str(t)))
        for t in range(trainers)
    ]
    while any(p.poll() is None for p in procs):
        if any(p.poll() not in (None, 0) for p in procs):
            break  # a trainer failed: the others would wait for it in a collective
        time.sleep(0.2)
    codes = [p.poll() for p in procs]
    if any(code != 0 for code in codes):  # the server waits for every client: stop all
        for p in procs + [server]:
            if p.poll() is None:
                p.kill()
        codes = [p.wait() or 0 for p in procs]
        codes = [c for c in codes if c] or [1]
    server.wait()
    return max(codes, key=abs)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dgl_mvs.local_cluster",
        description="Run a DistDGL training command on simulated machines of this host, one "
                    "per partition, e.g.: python -m dgl_mvs.local_cluster run "
                    "--part-config data/graph.json -- python train.py",
    )
    sub = parser.add_subparsers(dest="what", required=True)
    run = sub.add_parser("run", help="start the servers and trainers and wait for them")
    run.add_argument("--part-config", required=True, help="the JSON file partition_graph wrote")
    run.add_argument("--trainers-per-machine", type=int, default=1)
    run.add_argument("--timeout", type=float, default=3600.0)
    run.add_argument("command", nargs=argparse.REMAINDER)
    machine = sub.add_parser("machine", help=argparse.SUPPRESS)
    machine.add_argument("machine", type=int)
    machine.add_argument("trainers", type=int)
    machine.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else list(args.command)
    if args.what == "machine":
        return _machine(args.machine, args.trainers, command)
    codes = run_local_cluster(args.part_config, command,
                              trainers_per_machine=args.trainers_per_machine,
                              timeout=args.timeout)
    return max(codes, key=abs)


if __name__ == "__main__":
    sys.exit(main())
