"""README command 1: dgl_mvs's MVSSampler against DGL's NeighborSampler on Cora, offline.

The same GraphSAGE (as DGL's examples/pytorch/graphsage writes it) trains with each sampler
at the same batch size over three seeds; the table gives the test accuracy at the best
validation accuracy, the training wall time and the input rows a step computes.
"""
from __future__ import annotations

import statistics
import time
import warnings

import dgl
import torch
import torch.nn.functional as F
from dgl.nn import SAGEConv
from torch import nn

import dgl_mvs

SEEDS = (0, 1, 2, 3, 4)
BATCH = 32
EPOCHS = 40


class SAGE(nn.Module):
    def __init__(self, in_size, hid_size, out_size):
        super().__init__()
        self.layers = nn.ModuleList([SAGEConv(in_size, hid_size, "mean"),
                                     SAGEConv(hid_size, out_size, "mean")])
        self.dropout = nn.Dropout(0.5)

    def forward(self, blocks, x):
        h = x
        for i, (layer, block) in enumerate(zip(self.layers, blocks)):
            h = layer(block, h)
            if i != len(self.layers) - 1:
                h = self.dropout(F.relu(h))
        return h


@torch.no_grad()
def accuracy(model, g, mask):
    model.eval()
    pred = model([g, g], g.ndata["feat"]).argmax(1)
    model.train()
    return float((pred[mask] == g.ndata["label"][mask]).float().mean())


def train(g, num_classes, sampler_name, seed):
    torch.manual_seed(seed)
    dgl.seed(seed)
    train_nids = torch.nonzero(g.ndata["train_mask"]).squeeze(1)
    model = SAGE(g.ndata["feat"].shape[1], 256, num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=5e-4)
    feats = dict(prefetch_node_feats=["feat"], prefetch_labels=["label"])
    if sampler_name == "mvs":
        sampler = dgl_mvs.MVSSampler(g, train_nids, BATCH, model=model, seed=seed, **feats)
    else:
        sampler = dgl.dataloading.NeighborSampler([10, 10], **feats)
        loader = dgl.dataloading.DataLoader(g, train_nids, sampler, batch_size=BATCH,
                                            shuffle=True)
    best_val, test, wall, rows, steps = -1.0, 0.0, 0.0, 0, 0
    for epoch in range(EPOCHS):
        tick = time.perf_counter()
        if sampler_name == "mvs":
            sampler.set_epoch(epoch)
            loader = dgl.dataloading.DataLoader(g, sampler.step_ids(), sampler)
        for _, _, blocks in loader:
            logits = model(blocks, blocks[0].srcdata["feat"])
            labels = blocks[-1].dstdata["label"]
            if sampler_name == "mvs":
                w = blocks[-1].dstdata["mvs_weight"]
                loss = (w * F.cross_entropy(logits, labels, reduction="none")).sum()
            else:
                loss = F.cross_entropy(logits, labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if sampler_name == "mvs":
                sampler.update_scores(blocks, dgl_mvs.cross_entropy_grad_norm(logits, labels))
            rows += blocks[0].num_src_nodes()
            steps += 1
        wall += time.perf_counter() - tick
        val = accuracy(model, g, g.ndata["val_mask"])
        if val > best_val:
            best_val, test = val, accuracy(model, g, g.ndata["test_mask"])
    return {"test": test, "val": best_val, "time": wall, "rows": rows / steps}


def main() -> None:
    warnings.filterwarnings("ignore", message="Dataloader CPU affinity")
    ds = dgl_mvs.data.load_dataset("cora")
    g = ds[0]
    results = {}
    for sampler_name in ("mvs", "neighbor"):
        runs = []
        for seed in SEEDS:
            runs.append(train(g, ds.num_classes, sampler_name, seed))
            print(f"  {sampler_name:8s} seed {seed}: test accuracy {runs[-1]['test']:.3f}",
                  flush=True)
        results[sampler_name] = runs
    print(f"\nCora, GraphSAGE, batch size {BATCH}, {EPOCHS} epochs, {len(SEEDS)} seeds "
          "(mean ± std; test at the best validation epoch)\n")
    header = f"{'sampler':10s} {'test accuracy':>16s} {'train time (s)':>15s} {'rows/step':>10s}"
    print(header)
    print("-" * len(header))
    for name, runs in results.items():
        acc = [r["test"] for r in runs]
        print(f"{name:10s} {statistics.mean(acc):10.3f} ± {statistics.stdev(acc):.3f} "
              f"{statistics.mean(r['time'] for r in runs):15.2f} "
              f"{statistics.mean(r['rows'] for r in runs):10.0f}")
    print("\nmvs: dgl_mvs.MVSSampler(g, train_nids, batch_size, model=model) (exact one-hop "
          "blocks, importance-sampled seeds); neighbor: dgl.dataloading.NeighborSampler([10, "
          "10]).")


if __name__ == "__main__":
    main()
