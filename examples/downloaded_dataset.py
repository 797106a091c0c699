"""MVS training on a dataset that is downloaded once: ogbn-arxiv, ogbn-products or Reddit.

The model, evaluation and training loop are those of ``node_classification.py`` (next to
this file); this script adds what a long run on a large graph needs: DataLoader workers,
saving the run to disk every epoch with ``dgl_mvs.save_checkpoint`` and resuming from it,
and the sampler's gradient-variance diagnostic once per epoch.

    pip install ogb                                          # for the ogbn-* datasets
    python examples/downloaded_dataset.py --dataset ogbn-arxiv
    python examples/downloaded_dataset.py --dataset reddit --num-workers 2 --save run.pt
    python examples/downloaded_dataset.py --dataset reddit --save run.pt --resume

The data is downloaded into ``--root`` on first use (ogbn-arxiv ~80 MB, ogbn-products and
Reddit ~1.3-1.4 GB) and read from there afterwards.
"""
from __future__ import annotations

import argparse
import os

import torch
import torch.nn.functional as F
import tqdm
from dgl.dataloading import DataLoader
from node_classification import SAGE, evaluate, layerwise_infer

import dgl_mvs


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="ogbn-arxiv",
                        choices=["ogbn-arxiv", "ogbn-products", "reddit"])
    parser.add_argument("--root", default=None,
                        help="dataset folder (default: dgl_mvs.data.default_root())")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--save", default=None, metavar="PATH",
                        help="save the run (model, optimizer, sampler) here after every epoch")
    parser.add_argument("--resume", action="store_true", help="continue from --save PATH")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.resume and not (args.save and os.path.exists(args.save)):
        raise SystemExit("--resume needs --save PATH of an earlier run")
    torch.manual_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    root = {"root": args.root} if args.root else {}
    dataset = dgl_mvs.data.load_dataset(args.dataset, **root)
    g = dataset[0]
    train_idx, val_idx, test_idx = (torch.nonzero(g.ndata[f"{split}_mask"]).squeeze(1)
                                    for split in ("train", "val", "test"))
    print(f"{args.dataset}: {g.num_nodes():,} nodes, {g.num_edges():,} edges, "
          f"{train_idx.numel():,} training nodes, {dataset.num_classes} classes")

    model = SAGE(g.ndata["feat"].shape[1], args.hidden, dataset.num_classes).to(device)
    sampler = dgl_mvs.MVSSampler(g, train_idx, args.batch_size, model=model, seed=args.seed,
                                 prefetch_node_feats=["feat"], prefetch_labels=["label"])
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=5e-4)
    first_epoch = 0
    if args.resume:
        extra = dgl_mvs.load_checkpoint(args.save, model=model, optimizer=opt, sampler=sampler)
        first_epoch = extra["epoch"] + 1
        print(f"resumed after epoch {first_epoch - 1}")
    train_dataloader = DataLoader(g, sampler.step_ids(), sampler, device=device,
                                  num_workers=args.num_workers)
    val_dataloader = DataLoader(g, val_idx, sampler.evaluation_sampler(), device=device,
                                batch_size=4096, shuffle=False, drop_last=False)

    history = []
    for epoch in range(first_epoch, args.epochs):
        model.train()
        sampler.set_epoch(epoch)
        total_loss = 0.0
        for it, (input_nodes, output_nodes, blocks) in enumerate(
                tqdm.tqdm(train_dataloader, desc=f"epoch {epoch}")):
            y = blocks[-1].dstdata["label"]
            y_hat = model(blocks, blocks[0].srcdata["feat"])
            w = blocks[-1].dstdata["mvs_weight"]
            loss = (w * F.cross_entropy(y_hat, y, reduction="none")).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sampler.update_scores(blocks, dgl_mvs.cross_entropy_grad_norm(y_hat, y))
            total_loss += loss.item()
        acc = evaluate(model, val_dataloader)
        # gradient variance of the sampler's seeds over uniform seeds, on the same blocks
        variance = dgl_mvs.gradient_variance(sampler, model, repeats=8)
        print(f"Epoch {epoch:05d} | Loss {total_loss / (it + 1):.4f} | Accuracy {acc:.4f} | "
              f"variance vs uniform {variance['realised_ratio']:.2f}")
        history.append({"epoch": epoch, "val": acc, "variance": variance["realised_ratio"]})
        if args.save:
            dgl_mvs.save_checkpoint(args.save, model=model, optimizer=opt, sampler=sampler,
                                    extra={"epoch": epoch})

    test = layerwise_infer(device, g, test_idx, model, batch_size=4096)
    print(f"Test Accuracy {test:.4f}")
    return {"epochs": history, "test": test}


if __name__ == "__main__":
    main()
