"""Exact mini-batches at one-hop cost: a precomputed first layer, exact or control-variate above.

The blocks of :class:`OneHopSampler` (and of :class:`dgl_mvs.MVSSampler`'s default), first
layer first:

* **Layer 0 reads a precomputed aggregate.**  GCN, SAGE-mean and GIN aggregate raw features
  linearly, so ``agg(x)`` is computed once per graph (:class:`dgl_mvs.aggregation.
  FeatureAggregates`) and every destination of the first block gets a source row carrying
  its raw ``x_v`` (first, so that ``x[:num_dst]`` are raw features) and one carrying its own
  ``agg(x)_v``.  A stock ``dgl.nn`` layer then computes its exact full-graph output for that
  node from two rows instead of its neighbourhood (layers without a self term get the
  aggregate row alone from the hook).
* **Layers above are exact** (every in-edge, every source computed fresh; the default where
  degrees are moderate) **or control variates** (VR-GCN: ``s`` sampled neighbours computed
  fresh, the rest of the neighbourhood through a history snapshot ``hbar``), where degrees
  are high.  A control-variate block gives each destination ``v`` its own row and one
  "estimate" row with one edge to ``v``, which the forward pre-hook fills with
  ``S_v + d_v / s_v sum_{sampled u} c_uv (h_u - hbar_u)`` (``S = `` the layer's aggregation
  of ``hbar`` over the whole graph, kept in ``g.ndata``; the sampled part is one sparse
  product over the drawn edges), an unbiased estimate of ``sum_u c_uv h_u``; a stock layer
  aggregating one row per destination passes it through unchanged (its normalisation is 1
  there).  The previous layer computes only the distinct fresh nodes;
  :meth:`OneHopSampler.refresh` recomputes ``hbar`` and ``S`` for every node at the current
  weights (forward only).  When the layer's input comes straight out of the model's
  ``nn.Dropout`` (``h`` after it, ``mu`` before), the sampled part is
  ``d_v / s_v sum c_uv (mu_u - hbar_u) + sqrt(d_v / s_v) sum c_uv (h_u - mu_u)`` instead
  (VR-GCN's dropout-aware estimator, :mod:`dgl_mvs.dropout`): unbiased as well, and its
  dropout noise has the exact layer's variance instead of ``d_v / s_v`` times it.  A forward
  hook on the model's ``nn.Dropout`` modules hands ``mu`` over.

With exact layers the gradient of a 2-layer model is the full-graph gradient of the batch's
loss; no history is involved.  The hook (:func:`onehop_hook`) is one module-level function,
installed once per layer module: everything it does is read off the block it is called with.
"""
from __future__ import annotations

import contextlib
import math
import warnings
import weakref
from typing import Callable, Sequence

import dgl
import torch
from dgl import DGLGraph
from dgl.dataloading import BlockSampler
from dgl.nn import GINConv, SAGEConv
from torch import Tensor, nn

from . import keys
from .aggregation import (DGL_BLOCKS_HELP, Aggregation, FeatureAggregates, StaleAggregates,
                          _layer_list, aggregate, aggregations_of, check_input_feature,
                          live_aggregates, stale_in_worker_message)
from .blocks import _check_seeds, _in_edge_block, check_edge_weight, check_graph
from .dropout import (dropout_input, dropout_modules, has_dropout_hook, install_dropout_hook,
                      remove_dropout_hook)
from .hooks import has_pre_hook, install_pre_hook, remove_pre_hook
from .layer_calls import graph_and_input, with_graph, with_input

NID, EID = dgl.NID, dgl.EID

__all__ = ["OneHopSampler", "default_fanouts", "onehop_hook"]

#: Sampled neighbours per destination on a middle control-variate layer (VR-GCN used 2).
CV_FANOUT = 2

#: Sampled neighbours per destination on the last layer when the cost rule gives it control
#: variates.  Measured (``benchmarks/bench_cvd.py``, GraphSAGE, B=256, dropout 0.5, 5 epochs)
#: on the degree-100 graph: dropout-aware control variates with 2 draws lost 1.3 points to
#: the exact layer (0.974 against 0.987), with 8 draws 0.05 points at 0.34x its training time.
LAST_CV_FANOUT = 8


def default_fanouts(g: DGLGraph, num_layers: int, cv_fanout: int = CV_FANOUT,
                    last_cv_fanout: int = LAST_CV_FANOUT) -> list[int]:
    """The cost rule: ``-1`` (exact) or a number of draws (control variates) for each layer.

    Layer 0 always reads the precomputed aggregate (its entry is ``-1``).  The last layer is
    exact when the graph's mean in-degree ``E / N`` is at most ``EXACT_MAX_DEGREE``; above that
    the layer below would compute about ``E / N`` rows per destination, and control variates
    with ``last_cv_fanout`` draws cost ``last_cv_fanout + 1`` rows per destination plus a
    snapshot refresh every half graph of seeds.  Middle layers of a deeper model
    (``1 .. num_layers - 2``) use ``cv_fanout`` draws at any degree: exact middle layers
    multiply the rows by the degree once per layer.

    Examples
    --------
    >>> import dgl, torch
    >>> from dgl_mvs.onehop import default_fanouts
    >>> sparse = dgl.rand_graph(1000, 5000)      # mean in-degree 5: exact
    >>> dense = dgl.rand_graph(1000, 60000)      # mean in-degree 60: control variates
    >>> default_fanouts(sparse, 2), default_fanouts(dense, 2), default_fanouts(dense, 3)
    ([-1, -1], [-1, 8], [-1, 2, 8])
    """
    mean_degree = g.num_edges() / max(1, g.num_nodes())
    last = -1 if mean_degree <= EXACT_MAX_DEGREE else last_cv_fanout
    return [-1] + [cv_fanout] * (num_layers - 2) + [last] if num_layers > 1 else [-1]


#: Mean in-degree up to which the last layer is exact (see :func:`default_fanouts`).
EXACT_MAX_DEGREE = 40.0


# ---------------------------------------------------------------------------------- blocks
def _csc(g: DGLGraph) -> tuple[Tensor, Tensor, Tensor]:
    """In-edge CSR of ``g`` (DGL caches it): (indptr, source per edge, edge ID per edge)."""
    indptr, indices, eids = g.adj_tensors("csc")
    return indptr, indices, eids


def _draw_counts(degree: Tensor, fanout: int) -> Tensor:
    """``s_v`` per destination of a control-variate layer: ``min(d_v, fanout)``.

    ``s_v = d_v`` takes every in-edge of ``v`` (its estimate is exact).
    """
    return degree.clamp(max=fanout)


def _draw_in_edges(
    g: DGLGraph, dst: Tensor, fanout: int, generator: torch.Generator | None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per destination, all in-edges when ``d_v <= s_v``, else ``s_v`` drawn uniformly.

    ``s_v`` from :func:`_draw_counts`.  Draws are with replacement (so ``d_v / s_v * sum``
    is unbiased whatever the overlap), vectorised over the CSR: no loop over nodes.  Returns
    ``(position of the destination, source, edge ID, count s_v per destination)``.
    """
    indptr, indices, eids = _csc(g)
    dst64 = dst.long().to(indptr.device)
    start = indptr[dst64]
    degree = indptr[dst64 + 1] - start
    count = torch.minimum(_draw_counts(degree, fanout).to(degree.dtype), degree)
    take_all = count == degree
    # All edges of the destinations that take every in-edge.
    small = torch.nonzero(take_all).squeeze(1)
    small_deg = degree[small]
    small_pos = torch.repeat_interleave(small, small_deg)
    offsets = torch.arange(int(small_deg.sum()), device=indptr.device)
    offsets -= torch.repeat_interleave(torch.cumsum(small_deg, 0) - small_deg, small_deg)
    small_edges = start[small_pos] + offsets
    # `s_v` uniform draws for the others (row-major: destination by destination).
    big = torch.nonzero(~take_all).squeeze(1)
    big_pos = torch.repeat_interleave(big, count[big])
    uniform = torch.rand(big_pos.numel(), generator=generator, dtype=torch.float64)
    picks = (uniform.to(indptr.device) * degree[big_pos]).long()
    big_edges = start[big_pos] + picks
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
    hooked: bool = False,
) -> dgl.DGLGraph:
    """Layer 0: every destination reads its own precomputed aggregate (and its own row).

    Source rows are ``[x_v for v in dst] + [agg(x)_v for v in dst]`` with one edge from the
    second to the first copy, so that ``x[:num_dst]`` are the raw features for any layer.  A
    layer without a self term (``GraphConv``, ``SAGEConv('gcn')``, whose aggregate includes
    the node itself) gets the aggregate rows alone from :func:`onehop_hook`
    (``dstdata["mvs_aggregate_only"]``).  Without hooks (``hooked=False``: aggregation names
    were given) such layers get only ``[agg(x)_v]`` with one edge to ``v``.  The aggregate
    rows' IDs in ``srcdata[dgl.NID]`` are ``num_nodes + v``, so that indexing ``g.ndata``
    with ``input_nodes`` fails loudly instead of reading raw features: read the input from
    ``blocks[0].srcdata``.
    """
    own_row = aggregation.self_term and aggregation.kind != "gcn"
    pair = hooked or own_row
    block = first_block_layout(dst, g.num_nodes(), pair, g.idtype, g.device)
    for feature in aggregates.features:
        block.srcdata[feature] = aggregates.rows(feature, dst, with_features=pair)
    if edge_weight is not None:  # the weights are inside the aggregate already
        block.edata[keys.EDGE_WEIGHTS] = torch.ones(dst.numel(), device=g.device)
    if hooked:
        mark_first_block(block, aggregates.number, aggregate_only=not own_row)
    return block


def mark_first_block(block: dgl.DGLGraph, number: int, aggregate_only: bool) -> None:
    """The markers by which :func:`onehop_hook` recognises a (paired) first block."""
    num = block.num_dst_nodes()
    block.dstdata[keys.FIRST] = torch.full((num,), number, dtype=torch.int64, device=block.device)
    if aggregate_only:
        block.dstdata[keys.AGGREGATE_ONLY] = torch.ones(num, dtype=torch.bool,
                                                        device=block.device)


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

    Source rows: ``dst`` (fresh, the layer's own rows) and one estimate row per destination,
    with one edge from it to its destination, which :func:`onehop_hook` fills with the whole
    control-variate estimate of the destination's aggregation (so the layer's own weights
    and normalisation see one row per destination, whatever ``s``).  ``dstdata`` carries
    what it needs: ``"mvs_pseudo"``, the history part ``S_v - d_v / s_v * sum_{drawn}
    c_uv hbar_u`` (from the snapshot, here); per destination, padded to the largest ``s_v``,
    the drawn in-edges' rows in the layer below's output (``"mvs_drawn"``), their weights
    ``d_v / s_v * c_uv`` (``"mvs_drawn_weight"``) and their number ``s_v``
    (``"mvs_drawn_count"``); and ``"mvs_noise"``, ``sqrt(s_v / d_v)``, the factor of the
    dropout noise (VR-GCN's CVD, see :mod:`dgl_mvs.dropout`).
    """
    num = dst.numel()
    device = g.device
    position, src, eids, count = _draw_in_edges(g, dst, fanout, generator)
    position, src, count = position.to(device), src.to(device), count.to(device)
    below, rows = _append_new(dst, src.to(dst.dtype))
    degree = g.in_degrees(dst).to(device).float()
    weights = g.edata[edge_weight][eids.to(device).long()] if edge_weight is not None \
        else None
    coeff = aggregation.coefficients(g, src, dst[position], weights)
    ratio = degree / count.float().clamp(min=1.0)
    weight = (coeff * ratio[position]).float()
    # The history part: S_v - d_v / s_v * sum_{drawn} c_uv hbar_u.
    hbar = g.ndata[keys.snapshot_key(layer)]
    total = torch.index_select(g.ndata[keys.snapshot_agg_key(layer)], 0, dst.long()).float()
    drawn = torch.index_select(hbar, 0, src.long()).float() * weight[:, None]
    pseudo = total.index_add(0, position, -drawn).to(hbar.dtype)
    # The draws, padded per destination: each destination's draws are contiguous.
    draws = torch.arange(position.numel(), device=device)
    first = torch.full((num,), position.numel(), dtype=torch.int64, device=device)
    first = first.scatter_reduce(0, position, draws, "amin")
    slot = draws - first[position]
    width = int(count.max()) if num else 0
    drawn_rows = torch.zeros((num, width), dtype=torch.int64, device=device)
    drawn_rows[position, slot] = rows.long()
    drawn_weight = torch.zeros((num, width), device=device)
    drawn_weight[position, slot] = weight
    local = torch.arange(num, device=device)
    block = dgl.create_block((local + num, local), num_src_nodes=2 * num, num_dst_nodes=num,
                             idtype=g.idtype, device=device)
    block.srcdata[NID] = torch.cat([dst, dst])
    block.dstdata[NID] = dst
    block.edata[EID] = torch.full((num,), -1, dtype=g.idtype, device=device)
    block.dstdata[keys.PSEUDO] = pseudo
    block.dstdata[keys.DRAWN] = drawn_rows
    block.dstdata[keys.DRAWN_WEIGHT] = drawn_weight
    block.dstdata[keys.DRAWN_COUNT] = count.long()
    # CVD: the drawn rows' dropout noise enters with sqrt(ratio), not ratio.  s_v / d_v,
    # not 1 / ratio: a destination without in-edges has no draws (0, not an infinite
    # factor that turns its zero estimate into NaN).
    block.dstdata[keys.NOISE] = (count.float() / degree.clamp(min=1.0)).sqrt()
    if edge_weight is not None:  # the weights are inside the estimate
        block.edata[keys.EDGE_WEIGHTS] = torch.ones(num, device=device)
    return block, below


def _stop_block(dst: Tensor, edge_weight: str | None) -> dgl.DGLGraph:
    """A refresh pass's marker block for ``dst`` (see :func:`onehop_hook`)."""
    num = dst.numel()
    local = torch.arange(num, device=dst.device, dtype=dst.dtype)
    block = dgl.create_block((local, local), num_src_nodes=num, num_dst_nodes=num,
                             idtype=dst.dtype, device=dst.device)
    block.srcdata[NID] = dst
    block.dstdata[NID] = dst
    block.dstdata[keys.STOP] = torch.ones(num, dtype=torch.bool, device=dst.device)
    if edge_weight is not None:  # models that pass edge_weight=block.edata[...] find it
        block.edata[keys.EDGE_WEIGHTS] = torch.ones(num, device=dst.device)
    return block


def graph_structure(g: DGLGraph, samples: int = 8) -> tuple:
    """Node and edge counts and a few in-edge (CSC) entries: cheap, changes with the edges."""
    num_nodes, num_edges = g.num_nodes(), g.num_edges()
    if num_edges == 0:
        return num_nodes, num_edges
    indptr, indices, _ = _csc(g)
    at_edges = torch.linspace(0, num_edges - 1, samples, device=indices.device).long()
    at_nodes = torch.linspace(0, num_nodes, samples, device=indptr.device).long()
    return (num_nodes, num_edges, tuple(indices[at_edges].tolist()),
            tuple(indptr[at_nodes].tolist()))


def onehop_blocks(
    g: DGLGraph,
    seeds: Tensor,
    aggregations: Sequence[Aggregation],
    fanouts: Sequence[int],
    aggregates: FeatureAggregates,
    edge_weight: str | None = None,
    generator: torch.Generator | None = None,
    hooked: bool = False,
) -> tuple[Tensor, Tensor, list]:
    """The blocks of :class:`OneHopSampler` for ``seeds`` (see the module notes).

    ``fanouts[l]`` is ``-1`` for an exact layer and ``s > 0`` for a control-variate layer
    with ``s`` sampled neighbours; ``fanouts[0]`` is ignored (the first layer reads the
    precomputed aggregate).  ``hooked``: the layers carry :func:`onehop_hook` (see
    :func:`_first_block`).
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
    blocks.insert(0, _first_block(g, dst, aggregations[0], aggregates, edge_weight, hooked))
    return blocks[0].srcdata[NID], seeds, blocks


# ---------------------------------------------------------------------------------- hooks
class _Stop(Exception):
    """Raised by the hook on a refresh pass's marker block, carrying the layer's input."""

    def __init__(self, captured: Tensor):
        super().__init__("refresh pass: layer input captured")
        self.captured = captured


def onehop_hook(module: nn.Module, args: tuple, kwargs: dict):
    """The forward pre-hook of one-hop samplers: fits a layer's input to the block it gets.

    Stateless: what it does is read off the block, so it is installed once per layer module
    whatever the number of samplers (a second sampler, a re-run notebook cell), serves a
    module called at several places of the model (tied layers), pickles with the model, and
    passes every other graph (full graphs, other samplers' blocks) through untouched.

    * First block (``dstdata["mvs_first"]``): checks that the layer gets the raw features
      the sampler put in ``srcdata``, and for layers without a self term hands over the
      aggregate rows alone (``dstdata["mvs_aggregate_only"]``).
    * Control-variate block (``dstdata["mvs_drawn"]``): the previous layer's rows become
      ``[own rows, estimate rows]``, one estimate of the aggregation per destination.
    * Refresh block (``srcdata["mvs_fill"]``): every row comes from the snapshot.
    * Exact block of a layer that reads source degrees (``srcdata["mvs_scale"]``): rows are
      rescaled to the graph's degrees.
    * Refresh marker (``dstdata["mvs_stop"]``): the forward pass stops, handing back the input.
    """
    graph, h, where = graph_and_input(args, kwargs)
    if where is None or not isinstance(graph, DGLGraph) or not graph.is_block:
        return None
    dst = graph.dstdata
    if keys.STOP in dst:
        raise _Stop(h[0] if isinstance(h, tuple) else h)
    if keys.FIRST in dst:
        return _first_layer_call(module, graph, h, args, kwargs, where)
    pair = isinstance(h, tuple) and len(h) == 2
    src_h = h[0] if pair else h
    if not torch.is_tensor(src_h):
        return None
    new = _source_rows(module, graph, src_h)
    if new is None:
        return None
    # The destination rows are the sources' first rows on every dgl_mvs block.
    return with_input(args, kwargs, where, (new, h[1]) if pair else new)


onehop_hook._dgl_mvs_hook = True


def _source_rows(module: nn.Module, graph: DGLGraph, h: Tensor) -> Tensor | None:
    """The input rows a control-variate, refresh or rescaled exact block needs, or None."""
    src = graph.srcdata
    new = None
    if keys.DRAWN in graph.dstdata:
        return _estimate_rows(module, graph, h)
    if keys.FILL in src:
        new = src[keys.FILL].to(device=h.device, dtype=h.dtype)
    if keys.SCALE in src:  # exact block of a layer that reads source degrees
        new = h if new is None else new
        scale = src[keys.SCALE].to(device=new.device, dtype=new.dtype)
        new = new * scale.reshape((-1,) + (1,) * (new.dim() - 1))
    return new


def _estimate_rows(module: nn.Module, graph: DGLGraph, h: Tensor) -> Tensor:
    """A control-variate block's source rows: ``[h_v, estimate_v]`` for its destinations.

    ``estimate_v = pseudo_v + sum_{drawn u} d_v / s_v c_uv h_u`` (one sparse product over
    the drawn edges, computed once per destination rather than once per edge).  When ``h``
    is the output of a ``torch.nn.Dropout`` carrying :func:`dgl_mvs.dropout.dropout_hook`
    and ``mu`` its input, the drawn part is ``M_v + sqrt(s_v / d_v) (H_v - M_v)`` with ``H``
    and ``M`` the same sums over ``h`` and ``mu``: the dropout noise enters with
    ``sqrt(d_v / s_v)`` instead of ``d_v / s_v`` (VR-GCN's CVD).  Any other ``h`` (eval mode,
    functional dropout, no dropout): plain control variates, also unbiased.
    """
    dst = graph.dstdata
    num = graph.num_dst_nodes()
    pseudo = dst[keys.PSEUDO].to(device=h.device, dtype=h.dtype)
    if pseudo.shape[1:] != h.shape[1:]:
        raise ValueError(
            f"{type(module).__name__} input has width {tuple(h.shape[1:])} but its "
            f"control-variate history has {tuple(pseudo.shape[1:])}"
        )
    drawn = dst[keys.DRAWN].to(h.device)
    taken = torch.arange(drawn.shape[1], device=h.device) < dst[keys.DRAWN_COUNT].to(
        h.device)[:, None]
    position = torch.nonzero(taken)[:, 0]  # row-major: destination by destination
    matrix = torch.sparse_coo_tensor(
        torch.stack([position, drawn[taken]]),
        dst[keys.DRAWN_WEIGHT].to(device=h.device, dtype=h.dtype)[taken], (num, h.shape[0]),
    )
    estimate = torch.sparse.mm(matrix, h.reshape(h.shape[0], -1))
    mu = dropout_input(h)
    if mu is not None:
        mean = torch.sparse.mm(matrix, mu.reshape(mu.shape[0], -1))
        noise = dst[keys.NOISE].to(device=h.device, dtype=h.dtype)
        estimate = torch.lerp(mean, estimate, noise[:, None])
    return torch.cat([h[:num], pseudo + estimate.reshape(pseudo.shape)])


def _first_layer_call(module, graph: DGLGraph, h, args: tuple, kwargs: dict, where):
    """The first layer's call on a first block: check the input, give the aggregate view."""
    num = graph.num_dst_nodes()
    pair = isinstance(h, tuple) and len(h) == 2
    x = h[0] if pair else h
    if num == 0 or not torch.is_tensor(x):
        return None
    _check_raw_input(module, graph, x)
    aggregates = live_aggregates(int(graph.dstdata[keys.FIRST][0]))
    if aggregates is not None:  # built by this process's sampler (or its workers)
        aggregates.check_block(graph)
    agg = x[num:]
    if keys.AGGREGATE_ONLY in graph.dstdata:
        args, kwargs = with_graph(args, kwargs, _aggregate_view(graph))
        return with_input(args, kwargs, where, (agg, agg[:num]) if pair else agg)
    if not isinstance(module, _PAIR_LAYERS):
        return None
    # A layer with a self term gets (aggregate rows, raw rows) on the aggregate view: it
    # transforms each kind of row with its own weight only (SAGEConv would otherwise put
    # the raw rows through fc_neigh as well when its input is wider than its output).
    args, kwargs = with_graph(args, kwargs, _aggregate_view(graph))
    return with_input(args, kwargs, where, (agg, h[1] if pair else x[:num]))


#: Layers with a self term that take ``(source rows, destination rows)`` as their input.
_PAIR_LAYERS = (SAGEConv, GINConv)


def _aggregate_view(block: DGLGraph) -> DGLGraph:
    """The first block's aggregate rows alone, one edge from each to its node (same edge order)."""
    num = block.num_dst_nodes()
    local = torch.arange(num, device=block.device, dtype=block.idtype)
    view = dgl.create_block((local, local), num_src_nodes=num, num_dst_nodes=num,
                            idtype=block.idtype, device=block.device)
    view.srcdata[NID] = block.srcdata[NID][num:]
    view.dstdata[NID] = block.dstdata[NID]
    for key, value in block.edata.items():
        view.edata[key] = value
    return view


def _same_values(x: Tensor, ref: Tensor) -> bool:
    if x.shape != ref.shape:
        return False
    if x.dtype == ref.dtype and x.device == ref.device:
        if x.data_ptr() == ref.data_ptr() and x.stride() == ref.stride():
            return True
        return torch.equal(x, ref)
    return torch.allclose(x.to(device=ref.device, dtype=ref.dtype), ref, rtol=1e-3, atol=1e-6)


def _check_raw_input(module: nn.Module, graph: DGLGraph, x: Tensor) -> None:
    """The first layer must get the raw features that the sampler put in ``srcdata``.

    Identity (the usual ``blocks[0].srcdata["feat"]``) is free; a copy or a dtype or device
    conversion is compared by value.  Several features concatenated in ``srcdata`` order are
    accepted.
    """
    feats = [v for k, v in graph.srcdata.items()
             if k != NID and torch.is_tensor(v) and v.is_floating_point() and v.dim() == 2]
    if any(x is v for v in feats):
        return
    if any(_same_values(x, v) for v in feats):
        return
    if len(feats) > 1 and x.dim() == 2 and x.shape[1] == sum(v.shape[1] for v in feats) \
            and _same_values(x, torch.cat(feats, 1)):
        return
    raise ValueError(
        f"the first layer ({type(module).__name__}) did not get the raw input features of "
        "its block (blocks[0].srcdata[...]), from which the sampler precomputed its "
        "neighbour aggregates: the model changes its input before the first GNN layer. "
        "Likely causes: dropout on the input (nn.Dropout before the first layer; put it "
        "after), an input projection (nn.Linear before the first layer), or feature "
        "normalisation inside the model (normalise g.ndata before building the sampler). "
        "Give the first layer blocks[0].srcdata['feat'] unchanged, or, to keep the model as "
        "it is, " + DGL_BLOCKS_HELP
    )


@contextlib.contextmanager
def _eval_mode(model: Callable, default: torch.device):
    """Every module of ``model`` in eval mode for the block, restored after; yields its device
    (that of its parameters, else ``default``)."""
    modules = list(model.modules()) if isinstance(model, nn.Module) else []
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    device = next((p.device for m in modules for p in m.parameters()), None)
    try:
        yield device if device is not None else default
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)


class _HookedLayers:
    """Installs :func:`onehop_hook` on a model's layer modules and owns it there.

    The hook is installed at most once per module, whatever the number of samplers.
    :meth:`detach` removes it from the modules that no other attached sampler of this
    process uses; a detached sampler refuses to build blocks until :meth:`attach` is called
    again.  Usable as a context manager (``with OneHopSampler(...) as sampler:``), which
    detaches on exit.
    """

    _modules: list
    #: The model's ``nn.Dropout`` modules, hooked for dropout-aware control variates.
    _dropouts: Sequence = ()
    attached: bool = False

    def _attach_modules(self, layers: Sequence) -> None:
        self._modules = []
        for module in layers:
            if isinstance(module, nn.Module) and all(module is not m for m in self._modules):
                self._modules.append(module)
        self.attach()

    def attach(self) -> None:
        """Install the hook on the layers again (after :meth:`detach` or ``remove_hooks``)."""
        for module in self._modules:
            install_pre_hook(module, onehop_hook)
            _USERS.setdefault(module, weakref.WeakSet()).add(self)
        for module in self._dropouts:
            install_dropout_hook(module)
            _USERS.setdefault(module, weakref.WeakSet()).add(self)
        self.attached = True

    def detach(self) -> None:
        """Remove the hooks from the layers that no other attached sampler uses; stop sampling.

        Other samplers on the same layers keep working: the hook stays on the modules
        they use.  :func:`dgl_mvs.remove_hooks` removes every dgl_mvs hook of a model.
        """
        for module in self._modules:
            users = _USERS.get(module)
            if users is not None:
                users.discard(self)
            if not users:
                remove_pre_hook(module, onehop_hook)
        for module in self._dropouts:
            users = _USERS.get(module)
            if users is not None:
                users.discard(self)
            if not users:
                remove_dropout_hook(module)
        self.attached = False

    close = detach

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.detach()

    def _check_hooks(self) -> None:
        """A detached sampler, or layers whose hooks were removed, build no blocks."""
        if self._modules and not self.attached:
            raise RuntimeError(
                f"this {type(self).__name__} was detached (sampler.detach()); call "
                "sampler.attach() to use it again"
            )
        if torch.utils.data.get_worker_info() is not None:
            return  # a worker's copy of the model is not the one that runs
        for module in self._modules:
            if not has_pre_hook(module, onehop_hook):
                raise RuntimeError(
                    f"the dgl_mvs hook of the model's {type(module).__name__} layer was removed "
                    "(dgl_mvs.remove_hooks), and this sampler's blocks need it: call "
                    "sampler.attach()"
                )
        for module in self._dropouts:
            if not has_dropout_hook(module):
                raise RuntimeError(
                    "the dgl_mvs hook of the model's nn.Dropout, which this sampler's "
                    "control-variate layers read the dropout's input through, was removed "
                    "(dgl_mvs.remove_hooks): call sampler.attach()"
                )


#: Which samplers of this process use the hook on a module.
_USERS: "weakref.WeakKeyDictionary[nn.Module, weakref.WeakSet]" = weakref.WeakKeyDictionary()


def check_first_layer(layer: object, widths: Sequence[int], features: Sequence[str]) -> None:
    """Refuse a first layer that cannot be exact on precomputed aggregates of raw features.

    Its input width must be a feature's width (not an input projection's), and it must not
    drop out its input (``feat_drop``), which would drop the aggregate's rows instead.
    """
    name = type(layer).__name__
    drop = getattr(layer, "feat_drop", None)
    if isinstance(drop, nn.Dropout) and drop.p > 0:
        raise ValueError(
            f"the first layer ({name}) has feat_drop={drop.p}: it would drop entries of the "
            "precomputed neighbour aggregates, not of the raw features. Set feat_drop=0 on the "
            "first layer and apply dropout after it (on its output), or " + DGL_BLOCKS_HELP
        )
    width = _input_width(layer)
    if width is None or not widths or width in widths or width == sum(widths):
        return
    named = ", ".join(f"g.ndata[{f!r}] has {w}" for f, w in zip(features, widths))
    raise ValueError(
        f"the first layer ({name}) takes {width} input features but {named}: the first GNN "
        "layer must read the raw features, whose neighbour aggregates the sampler "
        "precomputes. An input projection (nn.Linear) before it cannot be used with one-hop "
        "blocks: move it after the first layer, or " + DGL_BLOCKS_HELP
    )


def _input_width(layer: object) -> int | None:
    """The input width a ``dgl.nn`` layer expects, when it says."""
    for attr in ("_in_src_feats", "_in_feats", "in_feats"):
        width = getattr(layer, attr, None)
        if isinstance(width, int):
            return width
    apply = getattr(layer, "apply_func", None)  # GINConv
    if isinstance(apply, nn.Module):
        for m in apply.modules():
            if isinstance(m, nn.Linear):
                return m.in_features
    return None


# ---------------------------------------------------------------------------------- sampler
def _check_fanouts(fanouts: Sequence[int], num_layers: int) -> list[int]:
    fanouts = list(fanouts)
    if len(fanouts) != num_layers:
        raise ValueError(f"fanouts has {len(fanouts)} entries for a {num_layers}-layer model")
    for f in fanouts:
        if isinstance(f, bool) or not isinstance(f, int) or f == 0 or f < -1:
            raise ValueError(f"fanouts must be -1 (exact) or positive integers, got {fanouts}")
    return fanouts


class OneHopSampler(_HookedLayers, BlockSampler):
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
        layers need the model itself (to refresh the snapshot).  The layers are
        ``model.layers`` when the model has it, else the ``dgl.nn`` convolutions among its
        submodules in registration order (``self.conv1``, ``self.conv2``, or
        ``self.gat_layers``); list tied layers (one module called twice) in
        ``model.layers``.  Given modules, the sampler installs :func:`onehop_hook` on them
        (see the notes).
    fanouts : list[int], optional
        Per layer, first layer first: ``-1`` exact, ``s > 0`` control variates with ``s``
        sampled neighbours (the first entry is ignored).  Default: the cost rule of
        :func:`default_fanouts` (exact last layer up to a mean degree of 40, else control
        variates with 8 draws).
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
    * Read the input as ``blocks[0].srcdata["feat"]`` (DGL's examples do) and give it to the
      first GNN layer unchanged: ``x[:num_dst]`` are the raw features of the first block's
      destinations (for a skip connection), ``x[num_dst:]`` their precomputed aggregates.
      ``input_nodes`` numbers the aggregate rows ``num_nodes + v``, so indexing ``g.ndata``
      with it fails.
    * **The first layer's input** is checked: at construction its input width against the
      features' (an input projection before it is refused) and ``feat_drop`` (refused: it
      would drop aggregate entries); at run time, the hook refuses an input other than the
      block's raw features (dropout on the input, an input projection of the same width,
      normalisation inside the model).  Not detected: a model that transforms the input
      and calls the first layer on something computed without it, or a first layer whose
      hook was removed.
    * **Hooks.**  :func:`onehop_hook` is installed once per layer module, whatever the number
      of samplers (a validation sampler next to :class:`dgl_mvs.MVSSampler`, a re-run
      notebook cell) or of places the module is called from (tied layers).  It is
      stateless, harmless on other graphs, and pickles with the model (``torch.save``,
      ``spawn`` workers).  With control-variate layers, the forward hook
      :func:`dgl_mvs.dropout.dropout_hook` goes on the model's ``torch.nn.Dropout`` modules
      (outside the layers) in the same way: it tags the dropout's output with its input, so
      that a control-variate layer whose input comes straight from that dropout separates
      the dropout noise from the neighbour sampling (VR-GCN's CVD); functional dropout
      (``F.dropout``) or a tensor changed after the dropout get plain control variates,
      which are unbiased too but carry ``d / s`` times the dropout noise.  :meth:`detach` (or leaving a ``with`` block) removes it from the
      modules that no other attached sampler uses; :func:`dgl_mvs.remove_hooks` removes
      every dgl_mvs hook of a model; a sampler whose hooks are gone refuses to build blocks
      until :meth:`attach`.  Given aggregation names instead of modules, no hook is
      installed, and layers without a self term get only the aggregate rows (no raw rows,
      no input check).
    * **Changed data.**  Per batch: features replaced or written through torch (version
      counter), and every raw row the first block reads (checksums, which also catch writes
      through ``.data`` or ``.numpy()``), are followed by recomputing the aggregates in
      place and building the batch again; edges added or removed in place (count and a
      sample of the in-edge lists) recompute the aggregates and the control-variate
      snapshot; a DataLoader given another graph (other edges) is refused.  In a DataLoader
      worker these are errors naming :meth:`update_aggregates` (a worker cannot recompute
      for the training process); rows built by a worker that kept an old copy of the
      features are caught in the training process by the first layer's hook (a sample of
      the batch's rows).  Not detected: changes below the checksum's tolerance (about
      ``1e-4`` of a row's norm), changes to nodes outside every first block read so far,
      edge weights written without the version counter, and edges changed after worker
      processes copied the graph.
    * ``GraphConv(norm="both")`` (and ``"left"``) read source out-degrees from the block, not
      the graph.  On exact layers the hook rescales each source row by
      ``sqrt(block degree / graph degree)`` (so pass the layer modules, not names);
      ``norm="none"`` with full-graph weights (``edge_weight="w"``,
      ``g.edata["w"] = dgl_mvs.gcn_norm(g)``) needs no rescaling.
    * Works in DataLoader workers started with ``fork``, ``spawn`` or ``forkserver``.

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

    A second sampler on the same model shares its hooks and removes none that the first uses:

    >>> with dgl_mvs.OneHopSampler(g, model, prefetch_node_feats=["feat"]) as other:
    ...     _, _, blocks = other.blocks(g, torch.arange(10))
    >>> [len(layer._forward_pre_hooks) for layer in model.layers]
    [1, 1]
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
        layers = _layer_list(model)
        self.aggregations = aggregations_of(layers)
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
        features = list(prefetch_node_feats)
        for feature in features:
            check_input_feature(g, feature)
        # Hooks go on the layer modules (all of them, once each); names get none.
        self.hooked = all(isinstance(layer, nn.Module) for layer in layers)
        if self.hooked:
            check_first_layer(layers[0], [g.ndata[f].shape[1] for f in features], features)
        self.features = FeatureAggregates(g, features, self.aggregations[0], edge_weight)
        self.cv_layers = [layer for layer in range(1, num_layers) if self.fanouts[layer] > 0]
        # Layers whose blocks give each edge its own source row need the hooks.
        needs_hooks = [
            layer for layer in range(1, num_layers)
            if self.fanouts[layer] > 0 or not self.aggregations[layer].exact_on_blocks
        ]
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
        self._structure = graph_structure(g)  # what the aggregates and snapshot were built on
        if self.cv_layers and (not isinstance(model, nn.Module)
                               or isinstance(model, (nn.ModuleList, nn.Sequential))):
            raise ValueError(
                f"control-variate layers {self.cv_layers} need the model itself (called as "
                "model(blocks, x)) to refresh their histories, not a list of its layers or "
                "aggregation names; pass the model, or fanouts=[-1, ...] for exact layers"
            )
        if needs_hooks and not self.hooked:
            raise ValueError(
                f"layers {needs_hooks} read source degrees (GraphConv(norm='both'/'left')) or "
                "use control variates, which needs hooks on the layer modules: pass the "
                "model or its layers, not aggregation names"
            )
        self._modules = []
        if self.hooked:
            self.model = model if isinstance(model, nn.Module) and callable(model) \
                and not isinstance(model, (nn.ModuleList, nn.Sequential)) else None
            if self.cv_layers and self.model is not None:  # dropout-aware control variates
                self._dropouts = dropout_modules(self.model, layers)
            self._attach_modules(layers)
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
        self._check_hooks()
        self._check_graph(g)
        self.features.check()
        state = generator.get_state() if generator is not None else None
        try:
            return self._build(seed_nodes, generator)
        except StaleAggregates as err:
            if torch.utils.data.get_worker_info() is not None:
                raise RuntimeError(stale_in_worker_message([err.feature])) from None
        # Written without torch's version counter (.data, .numpy()): recompute, draw again.
        self.features.update(force=True)
        if generator is not None:
            generator.set_state(state)
        return self._build(seed_nodes, generator)

    def _build(self, seed_nodes: Tensor, generator: torch.Generator | None):
        return onehop_blocks(
            self.g, seed_nodes.to(self.g.device), self.aggregations, self.fanouts,
            self.features, self.edge_weight, generator, hooked=self.hooked,
        )

    def _check_graph(self, g: DGLGraph) -> None:
        """Refuse another graph; follow (training process) or refuse (worker) changed edges.

        A graph object other than the sampler's (a copy, the graph on another device, the
        one a worker process unpickled) is accepted when it has the same edges and, on a
        sample of nodes, the same input features: the blocks are built from the sampler's.
        """
        if g is not self.g:
            if graph_structure(g) != graph_structure(self.g):
                raise ValueError(
                    f"this OneHopSampler was built for another graph ({self.g.num_nodes()} "
                    f"nodes, {self.g.num_edges()} edges; given: {g.num_nodes()} nodes, "
                    f"{g.num_edges()} edges, or the same counts with other edges): build a "
                    "sampler for this graph"
                )
            nodes = torch.linspace(0, g.num_nodes() - 1, min(16, g.num_nodes())).long()
            for feature in self.features.features:
                mine = self.g.ndata[feature][nodes.to(self.g.device)]
                if feature not in g.ndata or not torch.equal(
                        g.ndata[feature][nodes.to(g.device)].to(mine.device), mine):
                    raise ValueError(
                        f"the DataLoader's graph has other g.ndata[{feature!r}] than the graph "
                        "this OneHopSampler was built for (its blocks read the sampler's): "
                        "build the sampler for the graph given to the DataLoader"
                    )
        if graph_structure(self.g) == self._structure:
            return
        if torch.utils.data.get_worker_info() is not None:
            raise RuntimeError(stale_in_worker_message(self.features.features))
        self.update_aggregates()

    def update_aggregates(self) -> None:
        """Recompute the first layer's aggregates after changing input features, edges or weights.

        Changes are also found by themselves (see :class:`dgl_mvs.aggregation.
        FeatureAggregates`); call it in the training process before iterating a DataLoader
        with worker processes, which cannot recompute for it.  After edges were added or
        removed (``g.add_edges``) the control-variate snapshot is recomputed as well.
        """
        self.features.update(force=True)
        structure = graph_structure(self.g)
        if structure != self._structure:
            self._structure = structure
            if self.cv_layers:
                self.refresh()

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
    def refresh(self, model: Callable | None = None, chunk_size: int = 16384,
                logits_of: Tensor | None = None) -> Tensor | None:
        """Recompute the control-variate histories of every node at the current weights.

        Layer by layer (:meth:`layer_inputs`): the input of layer ``l`` for all nodes
        (``hbar_l``) and its full-graph aggregation ``S_l`` (one ``update_all``), both in
        ``g.ndata``.  Forward only, in eval mode (dropout off).  Cost: the first layer on
        every node (two rows each, no edge), plus one one-hop pass per deeper layer.

        ``logits_of``: nodes whose model outputs to return from the same pass (the score
        refresh of :class:`dgl_mvs.MVSSampler` comes almost free with a snapshot refresh).
        """
        if not self.cv_layers:
            return None
        self._check_hooks()  # the pass stops at a layer through its hook
        upto = max(self.cv_layers)
        if logits_of is not None:
            upto = max(upto, len(self.aggregations) - 1)
        inputs = self.layer_inputs(model, upto, chunk_size)
        for layer in self.cv_layers:
            self._store(layer, inputs[layer - 1])
        self._since_refresh = 0
        self.refreshed += 1
        if logits_of is None:
            return None
        return self.logits(model, logits_of, chunk_size, inputs=inputs)

    @torch.no_grad()
    def layer_inputs(self, model: Callable | None = None, upto: int | None = None,
                     chunk_size: int = 16384) -> list[Tensor]:
        """Every node's input to layers ``1 .. upto`` at the current weights, in eval mode.

        Layer-wise inference, as DGL's examples evaluate, but with the first layer read off
        the precomputed aggregates (two rows per node, no edge) and each layer above run on
        exact one-hop blocks over the layer below's outputs; the model's own code between its
        layers (activations, normalisation) runs as in training, dropout off.  Returns one
        ``(num_nodes, width)`` tensor per layer on the graph's device.
        """
        model = self._inference_model(model)
        upto = len(self.aggregations) - 1 if upto is None else upto
        g = self.g
        nodes = torch.arange(g.num_nodes(), device=g.device, dtype=g.idtype)
        inputs: list[Tensor] = []
        with _eval_mode(model, g.device) as device:
            for layer in range(1, upto + 1):
                parts = []
                for chunk in nodes.split(chunk_size):
                    blocks = [b.to(device) for b in self._inference_blocks(chunk, layer, inputs)]
                    try:
                        model(blocks, blocks[0].srcdata[self.features.features[0]])
                    except _Stop as stop:  # raised by the hook of layer `layer`
                        parts.append(stop.captured.to(g.device))
                    else:
                        raise RuntimeError("the model did not call its layers in order")
                inputs.append(torch.cat(parts))
        return inputs

    @torch.no_grad()
    def logits(self, model: Callable | None = None, nodes: Tensor | None = None,
               chunk_size: int = 16384, *, inputs: Sequence[Tensor] | None = None) -> Tensor:
        """The model's outputs for ``nodes`` (default: all) at the current weights, eval mode.

        Exact full-graph outputs, computed layer-wise (:meth:`layer_inputs`) and then the last
        layer on exact one-hop blocks of ``nodes`` only: cheaper than a full-graph forward,
        whose first layer aggregates the raw features over every edge.  ``inputs``: the
        layer inputs of a pass already made.
        """
        model = self._inference_model(model)
        g = self.g
        num_layers = len(self.aggregations)
        if nodes is None:
            nodes = torch.arange(g.num_nodes(), device=g.device, dtype=g.idtype)
        nodes = _check_seeds(g, torch.as_tensor(nodes).to(g.device))
        if inputs is None or len(inputs) < num_layers - 1:
            inputs = self.layer_inputs(model, num_layers - 1, chunk_size)
        outputs = []
        with _eval_mode(model, g.device) as device:
            for chunk in nodes.split(chunk_size):
                blocks = [b.to(device) for b in self._inference_blocks(chunk, num_layers, inputs)]
                outputs.append(model(blocks, blocks[0].srcdata[self.features.features[0]]))
        return torch.cat(outputs) if outputs else torch.zeros(0)

    def _inference_model(self, model: Callable | None) -> Callable:
        model = model if model is not None else self.model
        if model is None:
            raise ValueError(
                "layer-wise inference runs the model itself (called as model(blocks, x)): "
                "pass it, e.g. sampler.logits(model)"
            )
        self._check_hooks()
        return model

    def _inference_blocks(self, chunk: Tensor, layer: int, inputs: Sequence[Tensor]) -> list:
        """Blocks under which layer ``layer``'s input for ``chunk`` comes out exactly.

        ``inputs[l - 1]`` holds every node's input of layer ``l`` for the layers below.  A
        layer below the model's last gets a marker block, on which its hook stops the pass
        and hands back its input; ``layer == num_layers`` runs the model to its output.
        """
        g = self.g
        num_layers = len(self.aggregations)
        stop = [_stop_block(chunk, self.edge_weight)] * (num_layers - layer)
        if layer == 1:
            first = _first_block(g, chunk, self.aggregations[0], self.features,
                                 self.edge_weight, self.hooked)
            return [first] + stop
        # Layers below `layer - 1` run on empty blocks; layer - 1 reads its input from `inputs`.
        block = _exact_block(g, chunk, self.edge_weight, self.aggregations[layer - 1])
        block.srcdata[keys.FILL] = inputs[layer - 2][block.srcdata[NID].long()]
        empty = _first_block(g, chunk[:0], self.aggregations[0], self.features,
                             self.edge_weight, self.hooked)
        return [empty] * (layer - 1) + [block] + stop

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

