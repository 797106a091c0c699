"""Exact mini-batches at one-hop cost: a precomputed first layer, exact or control-variate above.

The blocks of :class:`OneHopSampler` (and of :class:`dgl_mvs.MVSSampler`'s default), first
layer first:

* **Layer 0 reads a precomputed aggregate.**  GCN, SAGE-mean and GIN aggregate raw features
  linearly, so ``agg(x)`` is computed once per graph (:class:`dgl_mvs.aggregation.
  FeatureAggregates`) and every destination of the first block gets one source row carrying
  its own ``agg(x)_v`` (plus a row carrying ``x_v`` when the layer also reads it: SAGEConv,
  GINConv).  A stock ``dgl.nn`` layer then computes its exact full-graph output for that node
  from two rows instead of its neighbourhood.
* **Layers above are exact** (every in-edge, every source computed fresh; the default where
  degrees are moderate) **or control variates** (VR-GCN: ``s`` sampled neighbours computed
  fresh, the rest of the neighbourhood through a history snapshot ``hbar``), where degrees
  are high.  A control-variate block gives each destination ``v`` one "pseudo" source row
  carrying ``S_v - d_v / s_v * sum_{sampled u} c_uv hbar_u`` (``S = `` the layer's
  aggregation of ``hbar`` over the whole graph, kept in ``g.ndata``) and one source row per
  sampled edge carrying ``d_v / s_v * c_uv * h_u``, each scaled by the inverse of what the layer
  multiplies a message by on that block, so that a stock layer's aggregation equals
  ``sum_u c_uv hbar_u + d_v / s_v sum_{sampled u} c_uv (h_u - hbar_u)``, an unbiased estimate of
  ``sum_u c_uv h_u``.  Forward pre-hooks on the model's layers insert those rows (the
  previous layer computes only the distinct fresh nodes); :meth:`OneHopSampler.refresh`
  recomputes ``hbar`` and ``S`` for every node at the current weights (forward only).

With exact layers the gradient of a 2-layer model is the full-graph gradient of the batch's
loss; no history and no hook is involved.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable, Sequence

import dgl
import torch
from dgl import DGLGraph
from dgl.dataloading import BlockSampler
from torch import Tensor, nn

from . import keys
from .aggregation import Aggregation, FeatureAggregates, _layer_list, aggregate, aggregations_of
from .blocks import _check_seeds, _in_edge_block, check_edge_weight, check_graph
from .layer_calls import graph_and_input, with_input

NID, EID = dgl.NID, dgl.EID

__all__ = ["OneHopSampler", "default_fanouts"]

#: Sampled neighbours per destination on a control-variate layer (VR-GCN used 2).
CV_FANOUT = 2


def default_fanouts(g: DGLGraph, num_layers: int, cv_fanout: int = CV_FANOUT) -> list[int]:
    """The cost rule: ``-1`` (exact) or ``cv_fanout`` (control variates) for each layer.

    Layer 0 always reads the precomputed aggregate (its entry is ``-1``).  A layer above is
    exact when the graph's mean in-degree ``E / N`` is at most ``EXACT_MAX_DEGREE``; above that
    the layer below would compute about ``E / N`` rows per destination, and control variates
    with ``cv_fanout`` sampled neighbours cost ``cv_fanout + 1`` rows per destination plus a
    snapshot refresh per epoch.  Middle layers of a deeper model (``1 .. num_layers - 2``) use
    control variates at any degree: exact middle layers multiply the rows by the degree once
    per layer.
    """
    mean_degree = g.num_edges() / max(1, g.num_nodes())
    last = -1 if mean_degree <= EXACT_MAX_DEGREE else cv_fanout
    return [-1] + [cv_fanout] * (num_layers - 2) + [last] if num_layers > 1 else [-1]


#: Mean in-degree up to which the last layer is exact (see :func:`default_fanouts`).
EXACT_MAX_DEGREE = 40.0


# ---------------------------------------------------------------------------------- blocks
def _csc(g: DGLGraph) -> tuple[Tensor, Tensor, Tensor]:
    """In-edge CSR of ``g`` (DGL caches it): (indptr, source per edge, edge ID per edge)."""
    indptr, indices, eids = g.adj_tensors("csc")
    return indptr, indices, eids


def _draw_in_edges(
    g: DGLGraph, dst: Tensor, fanout: int, generator: torch.Generator | None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per destination, all in-edges when ``d_v <= fanout``, else ``fanout`` drawn uniformly.

    Draws are with replacement (so ``d_v / fanout * sum`` is unbiased whatever the overlap),
    vectorised over the CSR: no loop over nodes.  Returns ``(position of the destination,
    source, edge ID, count s_v per destination)``.
    """
    indptr, indices, eids = _csc(g)
    dst64 = dst.long().to(indptr.device)
    start = indptr[dst64]
    degree = indptr[dst64 + 1] - start
    take_all = degree <= fanout
    count = torch.where(take_all, degree, torch.full_like(degree, fanout))
    # All edges of the small-degree destinations.
    small = torch.nonzero(take_all).squeeze(1)
    small_deg = degree[small]
    small_pos = torch.repeat_interleave(small, small_deg)
    offsets = torch.arange(int(small_deg.sum()), device=indptr.device)
    offsets -= torch.repeat_interleave(torch.cumsum(small_deg, 0) - small_deg, small_deg)
    small_edges = start[small_pos] + offsets
    # `fanout` uniform draws for the others.
    big = torch.nonzero(~take_all).squeeze(1)
    uniform = torch.rand((big.numel(), fanout), generator=generator, dtype=torch.float64)
    picks = (uniform.to(indptr.device) * degree[big, None]).long()
    big_edges = (start[big, None] + picks).reshape(-1)
    big_pos = big.repeat_interleave(fanout)
    position = torch.cat([small_pos, big_pos])
    edge = torch.cat([small_edges, big_edges])
    return position, indices[edge], eids[edge], count


def _append_new(prefix: Tensor, candidates: Tensor) -> tuple[Tensor, Tensor]:
    """``prefix`` followed by the distinct ``candidates`` not in it; and each candidate's row."""
    num = prefix.numel()
    unique, inverse = torch.unique(candidates, return_inverse=True)
    sorted_prefix, order = torch.sort(prefix)
    at = torch.searchsorted(sorted_prefix, unique).clamp_(max=max(num - 1, 0))
    known = sorted_prefix[at] == unique if num else torch.zeros_like(unique, dtype=torch.bool)
    extra = unique[~known]
    row = torch.empty_like(at)
    row[known] = order[at[known]]
    row[~known] = num + torch.arange(extra.numel(), device=at.device)
    return torch.cat([prefix, extra]), row[inverse]


def first_block_layout(dst: Tensor, num_nodes: int, pair: bool, idtype, device) -> dgl.DGLGraph:
    """The first block's structure: ``dst``'s own rows (``pair``) and aggregate rows.

    Source rows are ``dst`` followed by ``num_nodes + dst`` with one edge from each aggregate
    row to its node (``pair``), or the aggregate rows alone with one edge each; the caller
    fills ``srcdata`` with the features and aggregates.
    """
    num = dst.numel()
    local = torch.arange(num, device=dst.device, dtype=idtype)
    shifted = dst + num_nodes
    if pair:
        block = dgl.create_block((local + num, local), num_src_nodes=2 * num,
                                 num_dst_nodes=num, idtype=idtype, device=device)
        block.srcdata[NID] = torch.cat([dst, shifted])
    else:
        block = dgl.create_block((local, local), num_src_nodes=num, num_dst_nodes=num,
                                 idtype=idtype, device=device)
        block.srcdata[NID] = shifted
    block.dstdata[NID] = dst
    block.edata[EID] = torch.full((num,), -1, dtype=idtype, device=device)
    return block


def _first_block(
    g: DGLGraph,
    dst: Tensor,
    aggregation: Aggregation,
    aggregates: FeatureAggregates,
    edge_weight: str | None,
) -> dgl.DGLGraph:
    """Layer 0: every destination reads its own precomputed aggregate (and its own row).

    Source rows are ``[x_v for v in dst] + [agg(x)_v for v in dst]`` with one edge from the
    second to the first copy (layers with a self term), or only ``[agg(x)_v]`` with one edge
    to ``v``.  The aggregate rows' IDs in ``srcdata[dgl.NID]`` are ``num_nodes + v``, so that
    indexing ``g.ndata`` with ``input_nodes`` fails loudly instead of reading raw features:
    read the input from ``blocks[0].srcdata``.
    """
    pair = aggregation.self_term and aggregation.kind != "gcn"
    block = first_block_layout(dst, g.num_nodes(), pair, g.idtype, g.device)
    for feature in aggregates.features:
        block.srcdata[feature] = aggregates.rows(feature, dst, with_features=pair)
    if edge_weight is not None:  # the weights are inside the aggregate already
        block.edata[keys.EDGE_WEIGHTS] = torch.ones(dst.numel(), device=g.device)
    return block


def _exact_block(
    g: DGLGraph, dst: Tensor, edge_weight: str | None, aggregation: Aggregation | None = None
) -> dgl.DGLGraph:
    """Every in-edge of ``dst``; sources are ``dst`` followed by the other in-neighbours.

    Layers that normalise by source out-degree (``GraphConv(norm="both"/"left")``) read it
    from the block; ``srcdata["mvs_scale"]`` then rescales each source row so that the block
    degree cancels and the graph's degree takes its place (applied by the exchange hook).
    """
    block = _in_edge_block(g, dst)
    if edge_weight is not None:
        block.edata[keys.EDGE_WEIGHTS] = g.edata[edge_weight][block.edata[EID].long()].float()
    if aggregation is not None and not aggregation.exact_on_blocks:
        graph_degree = g.out_degrees(block.srcdata[NID]).clamp(min=1).float()
        ratio = block.out_degrees().clamp(min=1).float() / graph_degree
        block.srcdata[keys.SCALE] = ratio.sqrt() if aggregation.kind == "both" else ratio
    return block


def _cv_block(
    g: DGLGraph,
    dst: Tensor,
    layer: int,
    fanout: int,
    aggregation: Aggregation,
    edge_weight: str | None,
    generator: torch.Generator | None,
) -> tuple[dgl.DGLGraph, Tensor]:
    """A control-variate block for ``dst`` and the distinct nodes the layer below computes.

    Source rows: ``dst`` (fresh, the layer's own rows), one pseudo row per destination, one
    row per drawn edge.  ``srcdata["mvs_row"]`` gives each source row's row in the layer
    below's output (-1 for pseudo rows), ``srcdata["mvs_scale"]`` its multiplier, and
    ``dstdata["mvs_pseudo"]`` the pseudo rows' values, computed here from the snapshot.
    """
    num = dst.numel()
    device = g.device
    position, src, eids, count = _draw_in_edges(g, dst, fanout, generator)
    position, src, eids = position.to(device), src.to(device), eids.to(device)
    below, copy_rows = _append_new(dst, src.to(dst.dtype))
    degree = g.in_degrees(dst).to(device).float()
    count = count.to(device).float()
    weights = g.edata[edge_weight][eids.long()] if edge_weight is not None else None
    coeff = aggregation.coefficients(g, src, dst[position], weights)
    factor = aggregation.block_factor(count + 1.0)  # block in-degree: pseudo + drawn edges
    ratio = degree / count.clamp(min=1.0)
    copy_scale = coeff * ratio[position] / factor[position]
    # The pseudo row: S_v - d_v / s_v * sum_{drawn} c_uv hbar_u, over the layer's factor.
    hbar = g.ndata[keys.snapshot_key(layer)]
    total = torch.index_select(g.ndata[keys.snapshot_agg_key(layer)], 0, dst.long()).float()
    drawn = torch.index_select(hbar, 0, src.long()).float() * (coeff * ratio[position])[:, None]
    total = total.index_add(0, position, -drawn)
    pseudo = (total / factor[:, None]).to(hbar.dtype)
    local = torch.arange(num, device=device)
    num_edges = src.numel()
    block = dgl.create_block(
        (torch.cat([local + num, 2 * num + torch.arange(num_edges, device=device)]),
         torch.cat([local, position])),
        num_src_nodes=2 * num + num_edges, num_dst_nodes=num, idtype=g.idtype, device=device,
    )
    block.srcdata[NID] = torch.cat([dst, dst, src.to(dst.dtype)])
    block.dstdata[NID] = dst
    block.edata[EID] = torch.cat(
        [torch.full((num,), -1, dtype=eids.dtype, device=device), eids]
    ).to(g.idtype)
    block.srcdata[keys.ROW] = torch.cat(
        [local, torch.full((num,), -1, dtype=torch.int64, device=device), copy_rows.long()]
    )
    block.srcdata[keys.SCALE] = torch.cat(
        [torch.ones(num, device=device), torch.zeros(num, device=device), copy_scale.float()]
    )
    block.dstdata[keys.PSEUDO] = pseudo
    if edge_weight is not None:  # the weights are inside the scales
        block.edata[keys.EDGE_WEIGHTS] = torch.ones(num + num_edges, device=device)
    return block, below


def onehop_blocks(
    g: DGLGraph,
    seeds: Tensor,
    aggregations: Sequence[Aggregation],
    fanouts: Sequence[int],
    aggregates: FeatureAggregates,
    edge_weight: str | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, list]:
    """The blocks of :class:`OneHopSampler` for ``seeds`` (see the module notes).

    ``fanouts[l]`` is ``-1`` for an exact layer and ``s > 0`` for a control-variate layer
    with ``s`` sampled neighbours; ``fanouts[0]`` is ignored (the first layer reads the
    precomputed aggregate).
    """
    g = check_graph(g)
    seeds = _check_seeds(g, seeds)
    blocks: list = []
    dst = seeds
    for layer in range(len(aggregations) - 1, 0, -1):
        if fanouts[layer] < 0:
            block = _exact_block(g, dst, edge_weight, aggregations[layer])
            dst = block.srcdata[NID]
        else:
            block, dst = _cv_block(
                g, dst, layer, fanouts[layer], aggregations[layer], edge_weight, generator
            )
        blocks.insert(0, block)
    blocks.insert(0, _first_block(g, dst, aggregations[0], aggregates, edge_weight))
    return blocks[0].srcdata[NID], seeds, blocks


# ---------------------------------------------------------------------------------- hooks
class _Stop(Exception):
    """Raised by a hook once a refresh pass has captured the layer input it needs."""


class _Exchange:
    """Forward pre-hooks that fit a layer's input to a control-variate or refresh block.

    On a control-variate block the layer receives the previous layer's rows (one per distinct
    node it computed) and gets ``[own rows, pseudo rows, scaled rows of the drawn edges]``.
    On a refresh block (``srcdata["mvs_fill"]``) every row comes from the snapshot.
    """

    def __init__(self) -> None:
        self.handles: list = []
        self.stop_layer: int | None = None
        self.captured: Tensor | None = None

    def attach(self, layers: Sequence[nn.Module]) -> None:
        self.detach()
        for index, module in enumerate(layers):
            self.handles.append(
                module.register_forward_pre_hook(self._hook(index), with_kwargs=True)
            )

    def detach(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def _hook(self, layer: int) -> Callable:
        def hook(module, args, kwargs):
            graph, h, where = graph_and_input(args, kwargs)
            if not isinstance(graph, DGLGraph) or not graph.is_block or not torch.is_tensor(h):
                return None
            if self.stop_layer == layer:
                self.captured = h
                raise _Stop
            src = graph.srcdata
            if keys.FILL in src:
                new = src[keys.FILL].to(device=h.device, dtype=h.dtype)
            elif keys.ROW in src:
                num = graph.num_dst_nodes()
                rows = src[keys.ROW][2 * num:].to(h.device)
                scale = src[keys.SCALE][2 * num:].to(device=h.device, dtype=h.dtype)
                pseudo = graph.dstdata[keys.PSEUDO].to(device=h.device, dtype=h.dtype)
                if pseudo.shape[1:] != h.shape[1:]:
                    raise ValueError(
                        f"layer {layer} input has width {tuple(h.shape[1:])} but its control-"
                        f"variate history has {tuple(pseudo.shape[1:])}"
                    )
                new = torch.cat([h[:num], pseudo, torch.index_select(h, 0, rows) * scale[:, None]])
            elif keys.SCALE in src:  # exact block of a layer that reads source degrees
                scale = src[keys.SCALE].to(device=h.device, dtype=h.dtype)
                new = h * scale.reshape((-1,) + (1,) * (h.dim() - 1))
            else:
                return None
            return with_input(args, kwargs, where, new)

        return hook


# ---------------------------------------------------------------------------------- sampler
def _check_fanouts(fanouts: Sequence[int], num_layers: int) -> list[int]:
    fanouts = list(fanouts)
    if len(fanouts) != num_layers:
        raise ValueError(f"fanouts has {len(fanouts)} entries for a {num_layers}-layer model")
    for f in fanouts:
        if isinstance(f, bool) or not isinstance(f, int) or f == 0 or f < -1:
            raise ValueError(f"fanouts must be -1 (exact) or positive integers, got {fanouts}")
    return fanouts


class OneHopSampler(BlockSampler):
    """Exact mini-batch blocks at one-hop cost, for stock ``dgl.nn`` GCN, SAGE and GIN models.

    The first layer reads each node's precomputed aggregation of the raw features (computed
    once with DGL's ``update_all`` and kept in ``g.ndata``); the layers above read every
    in-edge (exact) or a few sampled ones with VR-GCN control variates over a history
    snapshot (see :mod:`dgl_mvs.onehop`).  With exact layers, a 2-layer model's outputs and
    gradients for the batch equal the full-graph ones, while the batch touches only its
    one-hop neighbourhood: no neighbour explosion and no sampling noise.  Use it as DGL's
    ``NeighborSampler`` is used (uniform seeds), or through :class:`dgl_mvs.MVSSampler`
    (its default blocks, with importance-sampled seeds).

    Parameters
    ----------
    g : DGLGraph
        The graph (homogeneous).  The aggregates are stored in its ``ndata``.
    model : nn.Module or list
        The GNN, called as ``model(blocks, x)`` with its layers in ``model.layers`` (as in
        DGL's examples); or the list of its layers; or one aggregation name per layer
        (``"mean"``, ``"sum"``, ``"both"``, ``"left"``, ``"gcn"``).  Each layer's aggregation
        is read from it (:func:`dgl_mvs.aggregation.aggregation_of`): ``SAGEConv`` ('mean',
        'gcn'), ``GraphConv`` (any norm) and ``GINConv`` ('sum', 'mean').  Control-variate
        layers need the model itself (to refresh the snapshot) and install forward pre-hooks
        on its layers.
    fanouts : list[int], optional
        Per layer, first layer first: ``-1`` exact, ``s > 0`` control variates with ``s``
        sampled neighbours (the first entry is ignored).  Default: the cost rule of
        :func:`default_fanouts` (exact last layer up to a mean degree of 40).
    edge_weight : str, optional
        ``g.edata`` key of edge weights that the model applies through
        ``edge_weight=block.edata["edge_weights"]`` (e.g. :func:`dgl_mvs.gcn_norm` with
        ``GraphConv(norm="none")``).  They are folded into the aggregates and scales where the
        blocks need it.
    refresh_every : int, optional
        Control variates only: refresh the history snapshot once this many seed nodes have
        been sampled since the last refresh (default: half the graph's nodes).  Refreshes run
        in the training process when it samples (``num_workers=0``); DataLoader worker
        processes cannot refresh it (they warn once): call :meth:`refresh` in the training
        loop yourself.  :class:`dgl_mvs.MVSSampler` refreshes it after every
        ``ceil(refresh_every / batch_size)`` steps, the same steps in every run.
    prefetch_node_feats : list[str]
        Input features of the first layer (``g.ndata`` keys, floating point): the block carries
        them in ``blocks[0].srcdata`` already aggregated as the layer needs them.  Required.
    prefetch_labels, output_device
        As in :class:`dgl.dataloading.NeighborSampler`.

    Notes
    -----
    * Read the input as ``blocks[0].srcdata["feat"]`` (DGL's examples do).  ``input_nodes``
      numbers the aggregate rows ``num_nodes + v``, so indexing ``g.ndata`` with it fails.
    * Dropout on the raw input features (``SAGEConv(feat_drop=...)`` on the first layer)
      drops the aggregated features instead: move it after the first layer.
    * ``GraphConv(norm="both")`` (and ``"left"``) read source out-degrees from the block, not
      the graph.  On exact layers the sampler rescales each source row by
      ``sqrt(block degree / graph degree)`` through a forward pre-hook it installs on the
      layer (so pass the layer modules, not names); ``norm="none"`` with full-graph weights
      (``edge_weight="w"``, ``g.edata["w"] = dgl_mvs.gcn_norm(g)``) needs no hook.

    Examples
    --------
    >>> import dgl, torch, torch.nn.functional as F
    >>> from dgl.nn import SAGEConv
    >>> import dgl_mvs
    >>> g = dgl.rand_graph(300, 3000)
    >>> g.ndata["feat"], g.ndata["label"] = torch.randn(300, 8), torch.randint(0, 3, (300,))
    >>> class SAGE(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.layers = torch.nn.ModuleList([SAGEConv(8, 16, "mean"),
    ...                                            SAGEConv(16, 3, "mean")])
    ...     def forward(self, blocks, x):
    ...         h = F.relu(self.layers[0](blocks[0], x))
    ...         return self.layers[1](blocks[1], h)
    >>> model = SAGE()
    >>> sampler = dgl_mvs.OneHopSampler(g, model, prefetch_node_feats=["feat"],
    ...                                 prefetch_labels=["label"])
    >>> loader = dgl.dataloading.DataLoader(g, torch.arange(200), sampler, batch_size=32)
    >>> input_nodes, output_nodes, blocks = next(iter(loader))
    >>> model(blocks, blocks[0].srcdata["feat"]).shape
    torch.Size([32, 3])
    """

    def __init__(
        self,
        g: DGLGraph,
        model: object,
        fanouts: Sequence[int] | None = None,
        *,
        edge_weight: str | None = None,
        refresh_every: int | None = None,
        prefetch_node_feats: Sequence[str] | None = None,
        prefetch_labels: Sequence[str] | None = None,
        prefetch_edge_feats: Sequence[str] | None = None,
        output_device: torch.device | str | None = None,
    ):
        if not prefetch_node_feats:
            raise ValueError(
                "OneHopSampler gives the first layer precomputed aggregates of its input "
                "features through blocks[0].srcdata: name them, e.g. "
                "prefetch_node_feats=['feat'] (and read x = blocks[0].srcdata['feat'])"
            )
        if prefetch_edge_feats:
            raise ValueError(
                "OneHopSampler's blocks hold aggregated rows, not sampled edges, so edge "
                "features cannot be prefetched; pass edge weights with edge_weight= instead"
            )
        # The input features are set by the sampler (aggregated), never fetched lazily.
        super().__init__(None, prefetch_labels, None, output_device)
        self.g = check_graph(g)
        self.aggregations = aggregations_of(model)
        num_layers = len(self.aggregations)
        self.fanouts = (
            default_fanouts(g, num_layers) if fanouts is None
            else _check_fanouts(fanouts, num_layers)
        )
        self.fanouts[0] = -1
        self.edge_weight = edge_weight
        check_edge_weight(g, edge_weight)
        for layer in range(1, num_layers):
            agg = self.aggregations[layer]
            if self.fanouts[layer] > 0 and agg.kind == "gcn":
                raise ValueError(
                    f"layer {layer} ({agg.source}) adds the destination's own input inside its "
                    "aggregation, which control variates do not cover: make it exact "
                    f"(fanouts[{layer}] = -1) or use SAGEConv('mean')"
                )
        self.features = FeatureAggregates(
            g, list(prefetch_node_feats), self.aggregations[0], edge_weight
        )
        self.cv_layers = [layer for layer in range(1, num_layers) if self.fanouts[layer] > 0]
        # Layers whose blocks give each edge its own source row need the exchange hooks.
        hooked = [
            layer for layer in range(1, num_layers)
            if self.fanouts[layer] > 0 or not self.aggregations[layer].exact_on_blocks
        ]
        self._exchange = _Exchange()
        self._stored: dict[str, int] = {}  # data_ptr of the snapshot tensors this sampler made
        self.model = None
        self._since_refresh = 0
        self.refresh_every = refresh_every
        self.auto_refresh = True
        self.refreshed = 0
        # Shared memory, read by DataLoader workers: the step after which the training process
        # last refreshed the snapshot (-1: at construction), and whether a worker has warned
        # that it cannot refresh it (see sample_blocks).
        self._snapshot_step = torch.full((1,), -1, dtype=torch.int64).share_memory_()
        self._worker_warned = torch.zeros(1, dtype=torch.int64).share_memory_()
        if self.cv_layers and not isinstance(model, nn.Module):
            raise ValueError(
                f"control-variate layers {self.cv_layers} need the model itself (called as "
                "model(blocks, x), with its layers in model.layers) to refresh their "
                "histories; pass the model, or fanouts=[-1, ...] for exact layers"
            )
        if hooked:
            layers = _layer_list(model)
            if not all(isinstance(layer, nn.Module) for layer in layers):
                raise ValueError(
                    f"layers {hooked} read source degrees (GraphConv(norm='both'/'left')) or "
                    "use control variates, which needs hooks on the layer modules: pass the "
                    "model or its layers, not aggregation names"
                )
            self.model = model if isinstance(model, nn.Module) and callable(model) else None
            self._exchange.attach(layers)
        if self.cv_layers:
            self.refresh()

    def rows_per_seed(self) -> float:
        """Expected first-layer rows per seed node (the cost unit of the schedules).

        ``E / N + 1`` per exact layer above the first, ``fanout + 1`` per control-variate
        layer, ignoring the overlap between seeds' neighbourhoods.
        """
        mean_degree = self.g.num_edges() / max(1, self.g.num_nodes())
        rows = 1.0
        for fanout in self.fanouts[1:]:
            rows *= (mean_degree if fanout < 0 else min(fanout, mean_degree)) + 1.0
        return rows

    # ------------------------------------------------------------------ blocks
    def sample_blocks(
        self,
        g: DGLGraph,
        seed_nodes: Tensor,
        exclude_eids=None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor, list]:
        """Blocks for ``seed_nodes`` (see the class notes), drawn with ``generator``."""
        seed_nodes = torch.as_tensor(seed_nodes)
        if self.auto_refresh and self.cv_layers:
            if torch.utils.data.get_worker_info() is None:
                self.after_step(seed_nodes.numel())
            elif int(self._worker_warned[0]) == 0:
                self._warn_in_worker()
        return self.blocks(g, seed_nodes, exclude_eids, generator)

    def _warn_in_worker(self) -> None:
        """Once per sampler (the flag is shared by the workers): the snapshot goes stale."""
        self._worker_warned[0] = 1
        warnings.warn(
            f"OneHopSampler: control-variate layers {self.cv_layers} read a history snapshot "
            "that this sampler refreshes as it samples in the training process; in DataLoader "
            "worker processes it cannot, so the snapshot stays at the weights of its last "
            "refresh (the estimates stay unbiased, their variance grows as the weights move). "
            "Call sampler.refresh() in the training loop every few hundred steps (the workers "
            "read the refreshed snapshot), use num_workers=0, or use dgl_mvs.MVSSampler, which "
            "refreshes it on a fixed step schedule",
            RuntimeWarning, stacklevel=3,
        )

    def blocks(
        self,
        g: DGLGraph,
        seed_nodes: Tensor,
        exclude_eids=None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor, list]:
        """``(input_nodes, output_nodes, blocks)`` for ``seed_nodes``, drawn with ``generator``."""
        if exclude_eids is not None:
            raise ValueError(
                "OneHopSampler cannot exclude edges: its first layer reads aggregates over "
                "every edge of the graph. Use dgl.dataloading.NeighborSampler for edge tasks"
            )
        if g is not self.g and g.num_nodes() != self.g.num_nodes():
            raise ValueError("OneHopSampler was built for another graph")
        self.features.check()
        return onehop_blocks(
            self.g, seed_nodes.to(self.g.device), self.aggregations, self.fanouts,
            self.features, self.edge_weight, generator,
        )

    def update_aggregates(self) -> None:
        """Recompute the first layer's aggregates after changing input features or weights."""
        self.features.update()

    # ------------------------------------------------------------------ snapshot
    def refresh_period(self, seeds_per_step: int) -> int:
        """Steps between snapshot refreshes at ``seeds_per_step`` seeds per step (0: none).

        About ``refresh_every`` seeds (default: half the graph's nodes) per refresh, as
        :meth:`after_step` counts them; a whole number of steps, so that the refreshes of a
        step-indexed schedule (:class:`dgl_mvs.MVSSampler`) fall on the same steps in every
        run, whatever its DataLoader workers do.
        """
        if not self.cv_layers:
            return 0
        every = self.refresh_every or max(1, self.g.num_nodes() // 2)
        return max(1, math.ceil(every / max(1, int(seeds_per_step))))

    @staticmethod
    def snapshot_step(step: int, period: int) -> int:
        """The step after which the snapshot that global step ``step`` reads is refreshed.

        ``-1`` for the steps before the first refresh (the snapshot of the construction).
        """
        return (int(step) // period) * period - 1

    @property
    def published_snapshot(self) -> int:
        """The step after which the training process last refreshed the snapshot."""
        return int(self._snapshot_step[0])

    def step_done(self, step: int, period: int) -> None:
        """After global step ``step`` of a step-indexed schedule: refresh when it is due.

        Called by :class:`dgl_mvs.MVSSampler` in the training process, in update_scores; the
        refresh is written in place (worker processes map the same memory) and then
        published, so that a worker building a later step waits for exactly that snapshot.
        """
        if not self.cv_layers or (step + 1) % period:
            return
        self.refresh()
        self._snapshot_step[0] = step

    def mark_snapshot(self, step: int, period: int) -> None:
        """Declare the snapshot as it is now the one of global step ``step`` (a new epoch, or
        a run that stopped before a scheduled refresh), so that workers do not wait for it."""
        due = self.snapshot_step(step, period)
        if self.cv_layers and self.published_snapshot < due:
            self._snapshot_step[0] = due

    def after_step(self, num_seeds: int) -> None:
        """Count a step's seeds; refresh the snapshot when ``refresh_every`` seeds are reached.

        Called by :meth:`sample_blocks` in the training process (DGL's DataLoader with
        ``num_workers=0``).  :class:`dgl_mvs.MVSSampler` sets ``auto_refresh=False`` and
        refreshes on its step schedule instead (:meth:`step_done`).
        """
        if not self.cv_layers:
            return
        self._since_refresh += int(num_seeds)
        every = self.refresh_every or max(1, self.g.num_nodes() // 2)
        if self._since_refresh >= every:
            self.refresh()

    @torch.no_grad()
    def refresh(self, model: Callable | None = None, chunk_size: int = 16384) -> None:
        """Recompute the control-variate histories of every node at the current weights.

        Layer by layer: the input of layer ``l`` for all nodes (``hbar_l``, from the
        precomputed first layer or from ``hbar_{l-1}`` on exact one-hop blocks) and its
        full-graph aggregation ``S_l`` (one ``update_all``), both in ``g.ndata``.  Forward
        only, in eval mode (dropout off).  Cost: the first layer on every node, plus one
        one-hop pass per deeper layer.
        """
        if not self.cv_layers:
            return
        model = model if model is not None else self.model
        g = self.g
        modules = _layer_list(model)
        modes = [m.training for m in modules]
        was = model.training if isinstance(model, nn.Module) else None
        if isinstance(model, nn.Module):
            model.eval()
        for m in modules:
            m.eval()
        device = next((p.device for m in modules for p in m.parameters()), g.device)
        num_layers = len(self.aggregations)
        nodes = torch.arange(g.num_nodes(), device=g.device, dtype=g.idtype)
        try:
            for layer in range(1, max(self.cv_layers) + 1):
                parts = []
                self._exchange.stop_layer = layer
                for chunk in nodes.split(chunk_size):
                    blocks = self._refresh_blocks(chunk, layer, num_layers)
                    blocks = [b.to(device) for b in blocks]
                    x = blocks[0].srcdata[self.features.features[0]]
                    try:
                        model(blocks, x)
                    except _Stop:
                        parts.append(self._exchange.captured.to(g.device))
                    else:
                        raise RuntimeError("the model did not call its layers in order")
                hbar = torch.cat(parts)
                self._store(layer, hbar)
        finally:
            self._exchange.stop_layer = None
            self._exchange.captured = None
            for m, mode in zip(modules, modes):
                m.train(mode)
            if was is not None:
                model.train(was)
        self._since_refresh = 0
        self.refreshed += 1

    def _refresh_blocks(self, chunk: Tensor, layer: int, num_layers: int) -> list:
        """Blocks under which layer ``layer``'s input for ``chunk`` comes out exactly."""
        g = self.g
        if layer == 1:
            first = _first_block(g, chunk, self.aggregations[0], self.features, self.edge_weight)
            return [first] * num_layers
        # Layers below `layer - 1` run on empty blocks; layer - 1 reads hbar_{layer - 1}.
        block = _exact_block(g, chunk, self.edge_weight)
        block.srcdata[keys.FILL] = g.ndata[keys.snapshot_key(layer - 1)][
            block.srcdata[NID].long()
        ]
        empty = _first_block(g, chunk[:0], self.aggregations[0], self.features, self.edge_weight)
        return [empty] * (layer - 1) + [block] * (num_layers - layer + 1)

    def _store(self, layer: int, hbar: Tensor) -> None:
        g = self.g
        key, agg_key = keys.snapshot_key(layer), keys.snapshot_agg_key(layer)
        total = aggregate(
            g, hbar, self.aggregations[layer],
            g.edata[self.edge_weight] if self.edge_weight is not None else None, progress=False,
        )
        # In place when the tensors are this sampler's own (worker processes map the same
        # memory); never into a snapshot left by another sampler, e.g. inherited by forked ranks.
        if key in g.ndata and g.ndata[key].shape == hbar.shape \
                and self._stored.get(key) == g.ndata[key].data_ptr():
            g.ndata[key].copy_(hbar)
            g.ndata[agg_key].copy_(total)
            return
        for name, value in ((key, hbar), (agg_key, total)):
            value = value.contiguous()
            if value.device.type == "cpu":
                value.share_memory_()
            g.ndata[name] = value
            self._stored[name] = value.data_ptr()

    # ------------------------------------------------------------------ state
    def _snapshot_keys(self) -> list[str]:
        return [
            key for layer in range(1, max(self.cv_layers, default=0) + 1)
            for key in (keys.snapshot_key(layer), keys.snapshot_agg_key(layer))
        ]

    def state_dict(self) -> dict:
        """The snapshot (histories and their aggregations) and its schedule, CPU copies."""
        snapshots = {
            key: self.g.ndata[key].detach().to("cpu", copy=True) for key in self._snapshot_keys()
        }
        return {"since_refresh": self._since_refresh, "refreshed": self.refreshed,
                "snapshot_step": self.published_snapshot, "snapshots": snapshots}

    def check_state_dict(self, state: dict) -> None:
        """Raise ValueError naming what does not fit (nothing is changed)."""
        if not isinstance(state, dict) or "snapshots" not in state:
            raise ValueError("block sampler state must be a dict with 'snapshots'")
        mine = set(self._snapshot_keys())
        if set(state["snapshots"]) != mine:
            raise ValueError(
                f"block sampler state holds snapshots {sorted(state['snapshots'])}, this "
                f"sampler keeps {sorted(mine)}"
            )
        for key, value in state["snapshots"].items():
            live = self.g.ndata[key]
            if not torch.is_tensor(value) or tuple(value.shape) != tuple(live.shape):
                raise ValueError(
                    f"snapshot {key!r} has shape {tuple(getattr(value, 'shape', ()))}, this "
                    f"graph's has {tuple(live.shape)}"
                )

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` in place (shared tensors stay shared)."""
        self.check_state_dict(state)
        for key, value in state["snapshots"].items():
            live = self.g.ndata[key]
            if self._stored.get(key) == live.data_ptr():
                live.copy_(value)
            else:  # another sampler's tensor: take a copy of our own (see _store)
                value = value.to(live.device, live.dtype).contiguous()
                if value.device.type == "cpu":
                    value.share_memory_()
                self.g.ndata[key] = value
                self._stored[key] = value.data_ptr()
        self._since_refresh = int(state.get("since_refresh", 0))
        self.refreshed = int(state.get("refreshed", 0))
        self._snapshot_step[0] = int(state.get("snapshot_step", -1))

    def __repr__(self) -> str:
        kinds = [a.kind for a in self.aggregations]
        return f"OneHopSampler(aggregations={kinds}, fanouts={self.fanouts})"

