"""GraphSAGE node classification with MVS-GNN seeds and one-hop blocks (dgl_mvs).

DGL's ``examples/pytorch/graphsage/node_classification.py``, switched to dgl_mvs: the model,
the layer-wise inference and the evaluation are DGL's; the sampler, the DataLoader's indices,
the weighted loss and the score update are the changes (marked ``# MVS``).

    python examples/node_classification.py                      # Cora, offline
    python examples/node_classification.py --dataset synthetic  # 100k nodes, generated
"""
import argparse

import dgl.nn as dglnn
import torch
import torch.nn as nn
import torch.nn.functional as F
import tqdm
from dgl.dataloading import DataLoader, MultiLayerFullNeighborSampler

import dgl_mvs


class SAGE(nn.Module):
    def __init__(self, in_size, hid_size, out_size):
        super().__init__()
        self.layers = nn.ModuleList()
        self.layers.append(dglnn.SAGEConv(in_size, hid_size, "mean"))
        self.layers.append(dglnn.SAGEConv(hid_size, hid_size, "mean"))
        self.layers.append(dglnn.SAGEConv(hid_size, out_size, "mean"))
        self.dropout = nn.Dropout(0.5)
        self.hid_size = hid_size
        self.out_size = out_size

    def forward(self, blocks, x):
        h = x
        for l, (layer, block) in enumerate(zip(self.layers, blocks)):
            h = layer(block, h)
            if l != len(self.layers) - 1:
                h = F.relu(h)
                h = self.dropout(h)
        return h

    def inference(self, g, device, batch_size):
        """Conduct layer-wise inference to get all the node embeddings."""
        feat = g.ndata["feat"]
        sampler = MultiLayerFullNeighborSampler(1, prefetch_node_feats=["feat"])
        dataloader = DataLoader(
            g, torch.arange(g.num_nodes()).to(g.device), sampler, device=device,
            batch_size=batch_size, shuffle=False, drop_last=False, num_workers=0)
        for l, layer in enumerate(self.layers):
            y = torch.empty(g.num_nodes(),
                            self.hid_size if l != len(self.layers) - 1 else self.out_size)
            feat = feat.to(device)
            for input_nodes, output_nodes, blocks in tqdm.tqdm(dataloader, desc=f"layer {l}"):
                h = layer(blocks[0], feat[input_nodes])
                if l != len(self.layers) - 1:
                    h = F.relu(h)
                    h = self.dropout(h)
                # by design, our output nodes are contiguous
                y[output_nodes[0]:output_nodes[-1] + 1] = h.cpu()
            feat = y
        return y


def evaluate(model, dataloader):
    model.eval()
    ys, y_hats = [], []
    with torch.no_grad():
        for input_nodes, output_nodes, blocks in tqdm.tqdm(dataloader, desc="validation"):
            ys.append(blocks[-1].dstdata["label"])
            y_hats.append(model(blocks, blocks[0].srcdata["feat"]))
    return (torch.cat(y_hats).argmax(1) == torch.cat(ys)).float().mean().item()


def layerwise_infer(device, graph, nid, model, batch_size):
    model.eval()
    with torch.no_grad():
        pred = model.inference(graph, device, batch_size)[nid]
        label = graph.ndata["label"][nid].to(pred.device)
        return (pred.argmax(1) == label).float().mean().item()


def train(args, device, g, train_idx, val_idx, model):
    # MVS: the sampler draws each step's seeds itself, by importance; it reads the
    # aggregation of each layer off the model (one-hop blocks)
    sampler = dgl_mvs.MVSSampler(g, train_idx, args.batch_size, model=model,
                                 prefetch_node_feats=["feat"], prefetch_labels=["label"])
    train_dataloader = DataLoader(g, sampler.step_ids(), sampler, device=device,  # MVS: steps
                                  num_workers=args.num_workers)
    val_dataloader = DataLoader(g, val_idx, sampler.evaluation_sampler(), device=device,
                                batch_size=4096, shuffle=False, drop_last=False)

    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=5e-4)
    for epoch in range(args.epochs):
        model.train()
        sampler.set_epoch(epoch)  # MVS
        total_loss = 0
        for it, (input_nodes, output_nodes, blocks) in enumerate(
                tqdm.tqdm(train_dataloader, desc=f"epoch {epoch}")):
            x = blocks[0].srcdata["feat"]
            y = blocks[-1].dstdata["label"]
            y_hat = model(blocks, x)
            w = blocks[-1].dstdata["mvs_weight"]  # MVS: 1 / (p_i |train|)
            loss = (w * F.cross_entropy(y_hat, y, reduction="none")).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sampler.update_scores(blocks, dgl_mvs.cross_entropy_grad_norm(y_hat, y))  # MVS
            total_loss += loss.item()
        acc = evaluate(model, val_dataloader)
        print(f"Epoch {epoch:05d} | Loss {total_loss / (it + 1):.4f} | Accuracy {acc:.4f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="cora", choices=["cora", "synthetic"],
                        help="an embedded dataset (no download); see "
                             "examples/downloaded_dataset.py for ogbn-*, Reddit")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=None,
                        help="seeds per step (default: 1024, or 32 on Cora's 140 labels)")
    parser.add_argument("--num-workers", type=int, default=0)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"Training on {device}.")

    # load and preprocess dataset
    dataset = dgl_mvs.data.load_dataset(args.dataset)
    g = dataset[0]
    train_idx, val_idx, test_idx = (torch.nonzero(g.ndata[f"{split}_mask"]).squeeze(1)
                                    for split in ("train", "val", "test"))
    if args.batch_size is None:
        args.batch_size = 32 if args.dataset == "cora" else 1024

    # create GraphSAGE model
    model = SAGE(g.ndata["feat"].shape[1], 256, dataset.num_classes).to(device)

    # model training
    train(args, device, g, train_idx, val_idx, model)

    # test the model
    acc = layerwise_infer(device, g, test_idx, model, batch_size=4096)
    print(f"Test Accuracy {acc:.4f}")
