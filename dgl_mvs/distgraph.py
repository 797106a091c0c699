"""MVS seeds on DGL's distributed engine (DistDGL): ``DistGraph``, scores in a ``DistTensor``.

:class:`DistMVSSampler` is the :class:`dgl_mvs.MVSSampler` schedule for a
:class:`dgl.distributed.DistGraph`:

* the score table is a ``DistTensor`` of the graph's nodes, partitioned like its features:
  each trainer writes the rows of its seeds, which go to the servers that own them;
* every ``interval`` steps each trainer reads the training nodes' scores and computes the
  same global probabilities ``p`` (the optimal MVS distribution for ``R * B`` seeds over the
  whole training set, ``R`` trainers of ``B`` seeds);
* each step, the trainers of partition ``k`` draw from ``k``'s training nodes only, with their
  global ``p`` (a systematic draw per partition, shared by the partition's trainers and split
  among them).  Every training node keeps exactly its global inclusion probability, seeds
  are local to the trainer's partition, and the draws of all partitions together have about
  ``R * B`` seeds (each partition draws ``sum_k p``, rounded up or down);
* the blocks come from a DGL block sampler on the ``DistGraph`` (``NeighborSampler``, whose
  neighbour sampling is DGL's distributed sampling), loaded by
  :class:`dgl.dataloading.DistNodeDataLoader`.

The weights ``R / (p_i n)`` make the average of the trainers' weighted losses (DDP averages
gradients) the Horvitz-Thompson estimate of the mean training loss.

The default blocks of ``MVSSampler`` have a DistDGL form too: :func:`add_aggregates` stores
the first layer's full-graph aggregation of the features as node data before
``partition_graph``, and :class:`DistOneHopSampler` builds exact blocks from it (the first
layer reads each node's own row and its precomputed aggregate, the layers above take every
in-edge through DGL's distributed sampling).  What it does not do: control-variate and
history blocks on a ``DistGraph``, and forward-only refreshes of every training node's
score; scores come from the training steps (``update_scores``).
"""
from __future__ import annotations

import math
from typing import Sequence

import dgl
import torch
from dgl.dataloading import BlockSampler
from torch import Tensor, nn

from . import keys
from .aggregation import (FeatureAggregates, _layer_list, aggregate_key, aggregations_of,
                          checksum_key, rows_changed)
from .distributed import process_group_place, rank_share
from .draws import systematic_draw
from .onehop import _HookedLayers, check_first_layer, first_block_layout, mark_first_block
from .probabilities import mvs_probabilities
from .sampler import _train_ids
from .schedule import step_generator

__all__ = ["DistMVSSampler", "DistOneHopSampler", "add_aggregates"]

STATE_VERSION = 1
_MIN_SCORE = 1e-12  # written scores are positive: zero marks a node never scored


class DistMVSSampler(BlockSampler):
    """Minimal-variance seeds for training on a :class:`dgl.distributed.DistGraph`.

    Parameters
    ----------
    g : dgl.distributed.DistGraph
        The distributed graph (after :func:`dgl.distributed.initialize`).
    train_nids : Tensor
        The training nodes of the whole graph (IDs of the partitioned graph, as
        ``dgl.distributed.partition_graph`` numbers them), or a boolean mask over its nodes.
        Every trainer passes the same set.
    batch_size : int
        Seeds per trainer and step on average; the ``R`` trainers draw ``R * batch_size``.
    block_sampler : dgl.dataloading.BlockSampler
        Builds the blocks of the drawn seeds on the ``DistGraph``, e.g.
        ``dgl.dataloading.NeighborSampler([10, 25])``.
    interval : int, optional
        Steps during which ``p`` stays fixed; by default ``ceil(|train| / (10 R B))``, as
        ``MVSSampler``.
    uniform_mix : float, default 0.25
        Share of uniform sampling mixed into ``p`` (scores from past steps are stale).
    seed : int, default 0
        Seed of the draws: the same on every trainer.
    score_name : str, default "mvs_score"
        Name of the score ``DistTensor``.

    Examples
    --------
    Inside a DistDGL trainer (``examples/distributed_training.py`` runs one)::

        g = dgl.distributed.DistGraph("graph")
        sampler = dgl_mvs.DistMVSSampler(g, train_nids, 1024,
                                         dgl.dataloading.NeighborSampler([10, 25]))
        for epoch in range(epochs):
            sampler.set_epoch(epoch)
            loader = dgl.dataloading.DistNodeDataLoader(g, sampler.step_ids(), sampler,
                                                        batch_size=1)
            for input_nodes, output_nodes, blocks in loader:
                logits = model(blocks, g.ndata["feat"][input_nodes])
                w = blocks[-1].dstdata["mvs_weight"]
                loss = (w * F.cross_entropy(logits, labels, reduction="none")).sum()
                ...
                sampler.update_scores(blocks, dgl_mvs.cross_entropy_grad_norm(logits, labels))
    """

    def __init__(self, g: "dgl.distributed.DistGraph", train_nids: Tensor, batch_size: int,
                 block_sampler: BlockSampler, *,
                 interval: int | None = None, uniform_mix: float = 0.25, seed: int = 0,
                 score_name: str = "mvs_score") -> None:
        super().__init__()
        if not isinstance(g, dgl.distributed.DistGraph):
            raise TypeError(f"g must be a dgl.distributed.DistGraph, got {type(g).__name__}; "
                            "for a DGLGraph use dgl_mvs.MVSSampler")
        if not isinstance(block_sampler, BlockSampler):
            raise TypeError("block_sampler must be a dgl.dataloading.BlockSampler, e.g. "
                            f"NeighborSampler([10, 25]), got {type(block_sampler).__name__}")
        self.g = g
        self.train_nids = torch.sort(_train_ids(g, train_nids)).values
        n = self.train_nids.numel()
        self.rank, self.world_size = process_group_place()
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.batch_size = int(batch_size)
        self.global_batch_size = self.batch_size * self.world_size
        if self.global_batch_size > n:
            raise ValueError(f"batch_size {batch_size} x {self.world_size} trainers is more than "
                             f"the {n} training nodes")
        if not 0.0 <= float(uniform_mix) <= 1.0:
            raise ValueError(f"uniform_mix must lie in [0, 1], got {uniform_mix!r}")
        self.uniform_mix = float(uniform_mix)
        self.seed = int(seed)
        self.block_sampler = block_sampler
        self.steps_per_epoch = math.ceil(n / self.global_batch_size)
        self.interval = int(interval) if interval is not None else \
            max(1, math.ceil(n / (10 * self.global_batch_size)))
        if self.interval < 1:
            raise ValueError(f"interval must be positive, got {interval!r}")

        book = g.get_partition_book()
        self.partition, self.num_partitions = int(book.partid), int(book.num_partitions())
        owner = book.nid2partid(self.train_nids)
        self._local = torch.nonzero(owner == self.partition).squeeze(1)  # positions in train
        self._group, self._group_rank = self._partition_group(owner)
        # One training node per partition: a pull of them waits for this trainer's pushes.
        self._probe = torch.stack([self.train_nids[owner == k][0] for k in owner.unique()])
        self.scores = dgl.distributed.DistTensor(
            (g.num_nodes(),), torch.float32, score_name, init_func=_zeros, persistent=True
        )
        self.epoch = 0
        self._next_step = 0  # global step of the next draw
        self._p: tuple[int, Tensor] | None = None  # (interval, p over train_nids)

    # ------------------------------------------------------------------ set-up
    def _partition_group(self, owner: Tensor) -> tuple[list[int], int]:
        """The trainers (ranks) on this trainer's partition, and its place among them."""
        if self.world_size == 1:
            parts = [self.partition]
        else:
            mine = torch.tensor([self.partition], dtype=torch.int64)
            gathered = [torch.empty_like(mine) for _ in range(self.world_size)]
            torch.distributed.all_gather(gathered, mine)
            parts = [int(t) for t in gathered]
        orphans = sorted(set(owner.unique().tolist()) - set(parts))
        if orphans:
            raise ValueError(
                f"partitions {orphans} hold training nodes but no trainer runs on them: "
                "launch trainers on every machine (DGL's launch.py --num_trainers)"
            )
        group = [r for r, p in enumerate(parts) if p == self.partition]
        return group, group.index(self.rank)

    # ------------------------------------------------------------------ epochs and steps
    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` (or continue it after :meth:`load_state_dict`)."""
        if isinstance(epoch, bool) or int(epoch) != epoch or epoch < 0:
            raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
        epoch = int(epoch)
        if epoch != self.epoch or self._next_step < epoch * self.steps_per_epoch:
            self._next_step = max(self._next_step, epoch * self.steps_per_epoch)
        self.epoch = epoch

    def step_ids(self) -> Tensor:
        """The steps of this epoch still to draw: the indices of ``DistNodeDataLoader``."""
        start = self._next_step - self.epoch * self.steps_per_epoch
        return torch.arange(max(0, start), self.steps_per_epoch)

    # ------------------------------------------------------------------ probabilities
    def current_probabilities(self, step: int | None = None) -> Tensor:
        """``p`` over ``train_nids`` for the interval of ``step`` (default: the next step)."""
        step = self._next_step if step is None else int(step)
        interval = step // self.interval
        if self._p is None or self._p[0] != interval:
            values = self.scores[self.train_nids].double()
            written = values > 0
            fill = values[written].max() if bool(written.any()) else values.new_tensor(1.0)
            scores = torch.where(written, values, fill)
            self._p = (interval, mvs_probabilities(scores, self.global_batch_size,
                                                   uniform_mix=self.uniform_mix))
        return self._p[1]

    def draw(self, step: int) -> tuple[Tensor, Tensor]:
        """This trainer's seeds of global ``step`` and their weights ``R / (p_i n)``."""
        p = self.current_probabilities(step)
        local_p = p[self._local]
        # The partition's trainers share one draw: the generator has no rank in it.
        gen = step_generator(self.seed, step, 7, self.partition)
        picked = systematic_draw(local_p, gen)
        if len(self._group) > 1:
            picked = picked[rank_share(picked.numel(), len(self._group), self._group_rank, gen)]
        seeds = self.train_nids[self._local[picked]]
        weights = self.world_size / (local_p[picked] * self.train_nids.numel())
        return seeds, weights

    # ------------------------------------------------------------------ sampling
    def sample_blocks(self, g: "dgl.distributed.DistGraph", indices: Tensor,
                      exclude_eids: Tensor | None = None) -> tuple[Tensor, Tensor, list]:
        """Draw the seeds of the step in ``indices`` and build its blocks."""
        indices = torch.as_tensor(indices).reshape(-1)
        if indices.numel() != 1:
            raise ValueError(
                f"DistMVSSampler got {indices.numel()} indices in one batch: its loader indices "
                "are step numbers, one per batch. Use DistNodeDataLoader(g, sampler.step_ids(), "
                "sampler, batch_size=1)"
            )
        step = self.epoch * self.steps_per_epoch + int(indices[0])
        if step != self._next_step:
            raise RuntimeError(
                f"step {step} drawn while step {self._next_step} was next: the loader must not "
                "shuffle its steps, and update_scores must follow every step"
            )
        seeds, weights = self.draw(step)
        input_nodes, output_nodes, blocks = self.block_sampler.sample_blocks(
            g, seeds.to(g.idtype), exclude_eids
        )
        last = blocks[-1]
        last.dstdata[keys.WEIGHT] = weights.float()
        last.dstdata[keys.STEP] = torch.full((seeds.numel(),), step, dtype=torch.int64)
        return input_nodes, output_nodes, blocks

    # ------------------------------------------------------------------ scores
    def update_scores(self, blocks: Sequence, scores: Tensor) -> None:
        """Write the seeds' scores (per-node gradient norms) of a step to the ``DistTensor``.

        Call it after every step on every trainer: it ends with a barrier, after which every
        trainer's rows of the step are on their servers (the next interval's ``p`` is then
        the same on all trainers).
        """
        last = blocks[-1]
        if keys.STEP not in last.dstdata:
            raise ValueError("these blocks were not drawn by DistMVSSampler")
        step = int(last.dstdata[keys.STEP][0])
        if step != self._next_step:
            raise ValueError(f"update_scores got the blocks of step {step}, expected step "
                             f"{self._next_step}: one call per step, in order")
        nodes = last.dstdata[dgl.NID].long()
        scores = torch.as_tensor(scores).detach().reshape(-1).float().cpu()
        if scores.numel() != nodes.numel():
            raise ValueError(f"update_scores needs one score per output node ({nodes.numel()}), "
                             f"got {scores.numel()}")
        if not bool(torch.isfinite(scores).all()) or bool((scores < 0).any()):
            raise ValueError("scores must be finite and non-negative (per-node gradient norms)")
        if nodes.numel():
            self.scores[nodes] = scores.clamp_min(_MIN_SCORE)
        self._sync()
        self._next_step = step + 1

    def _sync(self) -> None:
        """Wait until every trainer's pushes so far are on the servers."""
        self.scores[self._probe]  # a pull from each server follows this trainer's pushes there
        if self.world_size > 1:
            torch.distributed.barrier()

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Schedule, the interval's ``p`` and the training nodes' scores (plain tensors).

        Take it between steps, after ``update_scores``: under DDP every trainer's rows of the
        step are then on the servers, and no trainer writes the next step's before this one
        has joined its backward pass.
        """
        return {
            "version": STATE_VERSION, "seed": self.seed, "epoch": self.epoch,
            "next_step": self._next_step, "steps_per_epoch": self.steps_per_epoch,
            "interval": self.interval, "global_batch_size": self.global_batch_size,
            "num_train": self.train_nids.numel(),
            "p": None if self._p is None else (self._p[0], self._p[1].clone()),
            "scores": self.scores[self.train_nids].clone(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (call on every trainer: it ends with a barrier)."""
        for name in ("seed", "steps_per_epoch", "interval", "global_batch_size", "num_train"):
            mine = self.train_nids.numel() if name == "num_train" else getattr(self, name)
            if state.get(name) != mine:
                raise ValueError(f"the state has {name}={state.get(name)!r}, this sampler "
                                 f"{mine!r}: build it with the same arguments and trainers")
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unknown DistMVSSampler state version {state.get('version')!r}")
        scores = torch.as_tensor(state["scores"]).float()
        self.scores[self.train_nids] = scores
        self._sync()
        self.epoch, self._next_step = int(state["epoch"]), int(state["next_step"])
        p = state["p"]
        self._p = None if p is None else (int(p[0]), torch.as_tensor(p[1]).double())

    def __repr__(self) -> str:
        return (f"DistMVSSampler(batch_size={self.batch_size} x {self.world_size} trainers, "
                f"partition {self.partition}/{self.num_partitions}, interval={self.interval}, "
                f"block_sampler={type(self.block_sampler).__name__})")


def add_aggregates(g: dgl.DGLGraph, model: object, features: Sequence[str] = ("feat",)) -> list:
    """Store the first layer's full-graph aggregation of ``features`` in ``g.ndata``.

    Call it on the whole graph before ``dgl.distributed.partition_graph``, after the last
    change to the features (standardisation, ...): the aggregates
    (``g.ndata["mvs_agg_{kind}_{feature}"]``, one ``update_all``) and a checksum of every
    node's feature row (``g.ndata["mvs_agg_check_{kind}_{feature}"]``) are partitioned with
    the other node data.  :class:`DistOneHopSampler` reads the aggregates from the
    ``DistGraph`` and refuses rows whose features no longer match their checksum.  Returns
    the new keys.

    Examples
    --------
    >>> import dgl, torch
    >>> from dgl.nn import SAGEConv
    >>> from dgl_mvs.distgraph import add_aggregates
    >>> g = dgl.rand_graph(50, 200)
    >>> g.ndata["feat"] = torch.randn(50, 4)
    >>> add_aggregates(g, torch.nn.ModuleList([SAGEConv(4, 8, "mean"), SAGEConv(8, 2, "mean")]))
    ['mvs_agg_mean_feat', 'mvs_agg_check_mean_feat']
    """
    aggregates = FeatureAggregates(g, features, aggregations_of(model)[0])
    added = []
    for feature in aggregates.features:  # plain tensors: partition_graph saves them
        for key in (aggregates.key(feature), aggregates.checksum_key(feature)):
            g.ndata[key] = g.ndata[key].clone()
            added.append(key)
    return added


class DistOneHopSampler(_HookedLayers, BlockSampler):
    """Exact blocks on a :class:`dgl.distributed.DistGraph`, without neighbour explosion below.

    The first layer of every node reads two rows: its own features and the full-graph
    aggregation of its in-neighbours' features, precomputed by :func:`add_aggregates` before
    partitioning (``srcdata[dgl.NID]`` of an aggregate row is ``num_nodes + v``); the layers
    above take every in-edge of their destinations through DGL's distributed
    ``sample_neighbors``.  A stock ``dgl.nn`` model computes its full-graph output on these
    blocks: for two layers, a batch reaches one hop of nodes.  The sampler fills
    ``blocks[0].srcdata[feature]``: read the input from there, not from ``g.ndata``.  Given
    the layer modules, it installs :func:`dgl_mvs.onehop.onehop_hook` on them (as
    :class:`dgl_mvs.OneHopSampler` does: ``x[:num_dst]`` are the raw features for every
    layer kind, and the first layer's input is checked); every batch's raw rows are checked
    against the checksums :func:`add_aggregates` stored.

    Parameters
    ----------
    g : dgl.distributed.DistGraph
        The distributed graph, whose node data holds :func:`add_aggregates`'s keys.
    model : nn.Module
        The model (its layers found as :class:`dgl_mvs.OneHopSampler` finds them) or the list
        of its layers: its first layer's aggregation names the aggregate; the layers above
        must aggregate exactly on blocks (``SAGEConv`` mean/gcn, ``GraphConv`` with ``norm``
        "none" or "right", ``GINConv``).
    features : sequence of str, default ("feat",)
        The input features.

    Examples
    --------
    In a DistDGL trainer, with the aggregates added before partitioning::

        blocks = dgl_mvs.DistOneHopSampler(g, model)
        sampler = dgl_mvs.DistMVSSampler(g, train_mask, 1024, blocks)
        for input_nodes, output_nodes, mfgs in DistNodeDataLoader(g, sampler.step_ids(),
                                                                   sampler, batch_size=1):
            logits = model(mfgs, mfgs[0].srcdata["feat"])
    """

    def __init__(self, g: "dgl.distributed.DistGraph", model: object,
                 features: Sequence[str] = ("feat",)) -> None:
        super().__init__()
        if not isinstance(g, dgl.distributed.DistGraph):
            raise TypeError(f"g must be a dgl.distributed.DistGraph, got {type(g).__name__}; "
                            "for a DGLGraph use dgl_mvs.OneHopSampler")
        layers = _layer_list(model)
        self.aggregations = aggregations_of(layers)
        for layer, agg in enumerate(self.aggregations[1:], start=1):
            if not agg.exact_on_blocks:
                raise ValueError(
                    f"layer {layer} ({agg.source}) normalises by the sources' graph degrees, "
                    "which a DistGraph block does not carry: use it as the first layer only"
                )
        self.features = list(features)
        kind = self.aggregations[0].kind
        self._keys = {f: aggregate_key(kind, f) for f in self.features}
        self._checks = {f: checksum_key(kind, f) for f in self.features}
        missing = [k for f, k in self._keys.items() if f not in g.ndata or k not in g.ndata]
        if missing:
            raise KeyError(
                f"the DistGraph has no node data {missing}: call "
                "dgl_mvs.distgraph.add_aggregates(g, model) on the whole graph before "
                "dgl.distributed.partition_graph"
            )
        missing = [k for k in self._checks.values() if k not in g.ndata]
        if missing:
            raise KeyError(
                f"the DistGraph has aggregates but no checksums {missing} (partitioned by an "
                "older dgl_mvs): call dgl_mvs.distgraph.add_aggregates(g, model) again before "
                "dgl.distributed.partition_graph"
            )
        agg = self.aggregations[0]
        self._own_row = agg.self_term and agg.kind != "gcn"
        self.hooked = all(isinstance(layer, nn.Module) for layer in layers)
        self._pair = self._own_row or self.hooked  # own row + aggregate row
        self.num_nodes = g.num_nodes()
        self._modules = []
        if self.hooked:
            check_first_layer(layers[0], [int(g.ndata[f].shape[1]) for f in self.features],
                              self.features)
            self._attach_modules(layers)

    def sample_blocks(self, g: "dgl.distributed.DistGraph", seed_nodes: Tensor,
                      exclude_eids: Tensor | None = None) -> tuple[Tensor, Tensor, list]:
        if exclude_eids is not None:
            raise ValueError("DistOneHopSampler's first layer aggregates every in-edge: "
                             "edges cannot be excluded")
        self._check_hooks()
        seeds = torch.as_tensor(seed_nodes)
        blocks, dst = [], seeds
        for _ in range(len(self.aggregations) - 1):  # exact layers, from the top down
            frontier = dgl.distributed.sample_neighbors(g, dst, -1)
            block = dgl.to_block(frontier, dst)
            block.edata[dgl.EID] = frontier.edata[dgl.EID]
            blocks.insert(0, block)
            dst = block.srcdata[dgl.NID]
        blocks.insert(0, self._first_block(g, dst))
        return blocks[0].srcdata[dgl.NID], seeds, blocks

    def _first_block(self, g, dst: Tensor) -> dgl.DGLGraph:
        """Every destination's own row (layers with a self term) and its aggregate row."""
        # aggregate rows are numbered num_nodes + v: indexing g.ndata with them fails loudly
        block = first_block_layout(dst, self.num_nodes, self._pair, dst.dtype, dst.device)
        for feature, key in self._keys.items():
            agg = g.ndata[key][dst]
            if not self._pair:
                block.srcdata[feature] = agg
                continue
            raw = g.ndata[feature][dst]
            changed = rows_changed(raw, g.ndata[self._checks[feature]][dst])
            if bool(changed.any()):
                raise ValueError(
                    f"{int(changed.sum())} of this batch's rows of g.ndata[{feature!r}] differ "
                    "from the features that add_aggregates aggregated (were they standardised "
                    "or replaced after it?): call dgl_mvs.distgraph.add_aggregates(g, model) "
                    "after the last change to the features, then partition the graph again"
                )
            block.srcdata[feature] = torch.cat([raw, agg.to(raw.dtype)])
        if self.hooked:
            mark_first_block(block, 0, aggregate_only=not self._own_row)
        return block

    def __repr__(self) -> str:
        return f"DistOneHopSampler(aggregations={[a.kind for a in self.aggregations]})"


def _zeros(shape, dtype):
    return torch.zeros(shape, dtype=dtype)
