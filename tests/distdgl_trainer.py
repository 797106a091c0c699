"""A DistDGL trainer for tests/test_distdgl.py: started by dgl_mvs.local_cluster, one per machine.

Trains DGL's GraphSAGE with DDP on a DistGraph with DistMVSSampler seeds and NeighborSampler
blocks (DGL's distributed sampling), saves a state mid-way and resumes it in a new sampler,
then draws many steps from fixed scores for the statistical check.  Writes its results to
``{out_dir}/rank{rank}.pt``.
"""
import copy
import itertools
import os
import sys

os.environ.setdefault("DGLBACKEND", "pytorch")

import dgl  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import dgl_mvs  # noqa: E402
from dgl_mvs.distgraph import DistMVSSampler, DistOneHopSampler  # noqa: E402
from dgl_mvs.local_cluster import initialize  # noqa: E402
from models import GNN  # noqa: E402

B = 16  # seeds per trainer and step
EPOCHS = 3
RESUME_AT = 9  # global step after which the state is saved
STAT_STEPS = 1500


def SAGE(in_size, hidden, out_size):
    """DGL's two-layer GraphSAGE (mean), as the tests' other models."""
    return GNN("sage", in_size, hidden, out_size, 2)


def stat_scores(nodes):
    """Fixed skewed scores of the statistical check (any node ID numbering)."""
    return ((nodes.double() * 7919 % 101) / 10 + 0.05) ** 2


def train_steps(g, sampler, model, opt, stop=None):
    """Train from the sampler's next step to ``stop`` (or the end); per-step records."""
    records = []
    while sampler.epoch < EPOCHS:
        loader = dgl.dataloading.DistNodeDataLoader(g, sampler.step_ids(), sampler, batch_size=1)
        for input_nodes, output_nodes, blocks in loader:
            x = g.ndata["feat"][input_nodes]
            y = g.ndata["label"][output_nodes].long()
            logits = model(blocks, x)
            w = blocks[-1].dstdata[dgl_mvs.keys.WEIGHT]
            loss = (w * F.cross_entropy(logits, y, reduction="none")).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            step = int(blocks[-1].dstdata[dgl_mvs.keys.STEP][0])
            sampler.update_scores(blocks, dgl_mvs.cross_entropy_grad_norm(logits.detach(), y))
            records.append((step, output_nodes.clone(), w.clone(), float(loss)))
            if stop is not None and step + 1 == stop:
                return records
        if sampler.step_ids().numel() == 0:
            sampler.set_epoch(sampler.epoch + 1)
    return records


def accuracy(g, model, nodes):
    sampler = dgl.dataloading.NeighborSampler([-1, -1])
    loader = dgl.dataloading.DistNodeDataLoader(g, nodes, sampler, batch_size=256)
    correct = 0
    with torch.no_grad():
        for input_nodes, output_nodes, blocks in loader:
            logits = model(blocks, g.ndata["feat"][input_nodes])
            correct += int((logits.argmax(1) == g.ndata["label"][output_nodes]).sum())
    return correct / nodes.numel()


def main(out_dir):
    initialize(os.environ["DGL_IP_CONFIG"])
    torch.distributed.init_process_group("gloo")
    torch.set_num_threads(1)
    rank = torch.distributed.get_rank()
    g = dgl.distributed.DistGraph("graph")
    everything = torch.arange(g.num_nodes())
    train = torch.nonzero(g.ndata["train_mask"][everything]).squeeze(1)
    val = torch.nonzero(~g.ndata["train_mask"][everything]).squeeze(1)
    # All neighbours: DGL's distributed sampling, deterministic (the servers' random state
    # decides which neighbours a fanout keeps, and no client controls it).
    blocks = dgl.dataloading.NeighborSampler([-1, -1])

    def fresh_model():
        torch.manual_seed(0)
        model = SAGE(g.ndata["feat"].shape[1], 32, 5)
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        return model, ddp, torch.optim.Adam(ddp.parameters(), lr=0.01)

    # 1. Uninterrupted training, with the state saved after RESUME_AT steps.
    model, ddp, opt = fresh_model()
    sampler = DistMVSSampler(g, train, B, blocks, score_name="score_a")
    head = train_steps(g, sampler, ddp, opt, stop=RESUME_AT)
    state = sampler.state_dict()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    optim = copy.deepcopy(opt.state_dict())  # its tensors change in place
    tail = train_steps(g, sampler, ddp, opt)
    ps = sampler._p[1].clone()  # p of the last step's interval (replaced at the next draw)
    acc = accuracy(g, model, val)
    table = sampler.scores[train].clone()

    # 2. A new sampler (another score table) and model resume from the saved state.
    model2, ddp2, opt2 = fresh_model()
    model2.load_state_dict(weights)
    opt2.load_state_dict(optim)
    resumed_sampler = DistMVSSampler(g, train, B, blocks, score_name="score_b")
    resumed_sampler.load_state_dict(state)
    resumed = train_steps(g, resumed_sampler, ddp2, opt2)

    # 3. Sampled neighbourhoods (fanout 5): trains, blocks keep at most 5 in-edges per node.
    model3, ddp3, opt3 = fresh_model()
    sampled = DistMVSSampler(g, train, B, dgl.dataloading.NeighborSampler([5, 5]),
                             score_name="score_d")
    sampled_run = train_steps(g, sampled, ddp3, opt3)
    sampled_acc = accuracy(g, model3, val)
    loader = dgl.dataloading.DistNodeDataLoader(g, torch.arange(1), sampled, batch_size=1)
    sampled.set_epoch(EPOCHS)
    max_in = 0
    for _, _, mfgs in loader:
        max_in = max(int(b.in_degrees().max()) for b in mfgs)
        sampled.update_scores(mfgs, torch.ones(mfgs[-1].num_dst_nodes()))

    # 4. One-hop blocks (aggregates added before partitioning): the model's outputs on them,
    #    checked against DGL's full-graph forward by the test; then two MVS steps with them.
    onehop = DistOneHopSampler(g, model)
    probe = torch.arange(rank, g.num_nodes(), 7)
    with torch.no_grad():
        _, _, mfgs = onehop.sample_blocks(g, probe)
        onehop_out = model(mfgs, mfgs[0].srcdata["feat"])
    onehop_mvs = DistMVSSampler(g, train, B, onehop, score_name="score_e")
    loader = dgl.dataloading.DistNodeDataLoader(g, onehop_mvs.step_ids(), onehop_mvs,
                                                batch_size=1)
    onehop_steps = []
    for _, output_nodes, mfgs in itertools.islice(loader, 2):
        logits = model(mfgs, mfgs[0].srcdata["feat"])
        y = g.ndata["label"][output_nodes].long()
        onehop_mvs.update_scores(mfgs, dgl_mvs.cross_entropy_grad_norm(logits.detach(), y))
        onehop_steps.append(output_nodes.numel())

    # 5. Many draws from fixed scores: inclusion frequencies against the global p.
    stat = DistMVSSampler(g, train, B, blocks, score_name="score_c", uniform_mix=0.25)
    if rank == 0:
        stat.scores[train] = stat_scores(train).float()
    stat._sync()
    p = stat.current_probabilities(0).clone()
    draws = [stat.draw(step)[0] for step in range(STAT_STEPS)]  # all in interval 0
    torch.distributed.barrier()
    torch.save({"head": head, "tail": tail, "resumed": resumed, "accuracy": acc,
                "table": table, "p": ps, "train": train, "stat_p": p, "stat_draws": draws,
                "partition": sampler.partition, "probe": probe, "onehop_out": onehop_out,
                "model": {k: v.clone() for k, v in model.state_dict().items()},
                "onehop_steps": onehop_steps,
                "sampled_run": sampled_run, "sampled_accuracy": sampled_acc, "max_in": max_in, "local": train[sampler._local],
                "num_nodes": g.num_nodes()},
               os.path.join(out_dir, f"rank{rank}.pt"))
    torch.distributed.barrier()
    dgl.distributed.exit_client()


if __name__ == "__main__":
    main(sys.argv[1])
