"""Message-flow blocks (MFGs) for MVS mini-batches: history, control-variate and exact.

Every builder returns ``(input_nodes, output_nodes, blocks)`` like a DGL ``BlockSampler``, with
the DGL block contract: ``blocks[i].srcdata[NID][:num_dst] == blocks[i].dstdata[NID]``,
``blocks[i].dstdata[NID] == blocks[i + 1].srcdata[NID]``, and ``edata[EID]`` naming the edge of
``g`` behind every block edge.  ``srcdata["mvs_fresh"]`` marks the source rows that the previous
layer computes; the other rows (the "halo") take their input from history.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import dgl
import torch
from dgl import DGLGraph
from torch import Tensor

from . import keys

NID, EID = dgl.NID, dgl.EID

__all__ = [
    "check_graph",
    "check_num_layers",
    "check_edge_weight",
    "edge_weights_of",
    "history_blocks",
    "control_variate_blocks",
    "exact_blocks",
]


def check_graph(g: object) -> DGLGraph:
    """Raise a clear error unless ``g`` is a homogeneous :class:`dgl.DGLGraph`."""
    if not isinstance(g, DGLGraph):
        raise TypeError(f"expected a dgl.DGLGraph, got {type(g).__name__}")
    if g.is_block:  # a block has two node types (sources, destinations): say what it is
        raise ValueError(
            "expected the full graph, got a block (message flow graph, MFG) with "
            f"{g.num_src_nodes()} source and {g.num_dst_nodes()} destination nodes: pass "
            "the graph that the blocks are sampled from"
        )
    if not g.is_homogeneous:
        raise ValueError(
            "dgl_mvs samples homogeneous graphs only; this graph has node types "
            f"{g.ntypes} and edge types {g.etypes}. Convert it with dgl.to_homogeneous(g)."
        )
    return g


def _check_seeds(g: DGLGraph, seeds: Tensor) -> Tensor:
    if not torch.is_tensor(seeds) or seeds.dim() != 1:
        raise ValueError("seed nodes must be a 1-D tensor of node IDs")
    if seeds.numel() == 0:
        raise ValueError("seed nodes are empty: a mini-batch needs at least one node")
    if seeds.device != g.device:
        raise ValueError(f"seed nodes are on {seeds.device} but the graph is on {g.device}")
    if int(seeds.min()) < 0 or int(seeds.max()) >= g.num_nodes():
        raise ValueError(f"seed node IDs must lie in [0, {g.num_nodes()})")
    if torch.unique(seeds).numel() != seeds.numel():
        raise ValueError("seed nodes must be unique: a node is a destination once per block")
    return seeds.to(g.idtype)


def check_num_layers(num_layers: object) -> int:
    """``num_layers`` if it is a positive ``int``, else a ValueError."""
    if not isinstance(num_layers, int) or num_layers < 1:
        raise ValueError(f"num_layers must be a positive integer, got {num_layers!r}")
    return num_layers


def check_edge_weight(g: DGLGraph, key: str | None) -> None:
    """Raise KeyError, saying how to compute them, unless ``key`` is None or in ``g.edata``."""
    if key is not None and key not in g.edata:
        raise KeyError(
            f"edge weight key {key!r} is not in g.edata (keys: {list(g.edata.keys())}); "
            f"compute it first, e.g. g.edata[{key!r}] = dgl_mvs.gcn_norm(g)"
        )


def edge_weights_of(g: DGLGraph, key: str | None, eids: Tensor) -> Tensor | None:
    """Gather the full-graph edge weights ``g.edata[key]`` of edges ``eids`` (None if no key)."""
    if key is None:
        return None
    check_edge_weight(g, key)
    weights = g.edata[key]
    if weights.dim() != 1:
        raise ValueError(f"g.edata[{key!r}] must hold one scalar per edge")
    return weights[eids.long()]


def _check_exclude(g: DGLGraph, exclude_eids: object) -> Tensor | None:
    """Sorted unique edge IDs to leave out of every block, or None when nothing is excluded.

    Accepts what DGL's ``BlockSampler.sample_blocks`` may pass for a homogeneous graph: None,
    a tensor or list of edge IDs, or a one-entry dict keyed by the graph's edge type.
    """
    if exclude_eids is None:
        return None
    if isinstance(exclude_eids, Mapping):
        # as_edge_prediction_sampler passes a dict when the edge IDs were given as one.
        if len(exclude_eids) > 1:
            raise ValueError(
                f"exclude_eids has {len(exclude_eids)} edge types but the graph is homogeneous"
            )
        if not exclude_eids:
            return None
        exclude_eids = next(iter(exclude_eids.values()))
    if not torch.is_tensor(exclude_eids):
        exclude_eids = torch.as_tensor(exclude_eids)
    if exclude_eids.numel() == 0:
        return None
    if exclude_eids.dim() > 1:
        raise ValueError(
            f"exclude_eids must be a 1-D tensor of edge IDs, got shape {tuple(exclude_eids.shape)}"
        )
    if exclude_eids.is_floating_point() or exclude_eids.dtype == torch.bool:
        raise TypeError(f"exclude_eids must hold integer edge IDs, got {exclude_eids.dtype}")
    exclude_eids = exclude_eids.reshape(-1).to(device=g.device, dtype=torch.int64)
    low, high = int(exclude_eids.min()), int(exclude_eids.max())
    if low < 0 or high >= g.num_edges():
        raise ValueError(
            f"exclude_eids must lie in [0, {g.num_edges()}) (edge IDs of the graph), got IDs "
            f"from {low} to {high}"
        )
    # Sorted and unique once per call, so each layer tests membership with a binary search
    # (no O(num_edges) mask per batch on large graphs).
    return torch.unique(exclude_eids).to(g.idtype)


def _in_edge_block(
    g: DGLGraph,
    dst_nodes: Tensor,
    with_edges: Tensor | None = None,
    *,
    excluded: Tensor | None = None,
) -> dgl.DGLGraph:
    """Block over ``dst_nodes`` holding every in-edge of ``dst_nodes[with_edges]`` (all: None).

    Sources are the destinations followed by the other in-neighbours in ascending ID order.
    (``dgl.to_block`` orders those by thread scheduling on CPU, so the same batch could give
    differently ordered blocks and float sums from run to run; a seed must mean one run.)
    ``excluded`` (sorted unique edge IDs of ``g``, from :func:`_check_exclude`) are left out,
    and so are the in-neighbours reached only through them.
    """
    num_dst = dst_nodes.numel()
    if with_edges is None:
        with_edges = torch.arange(num_dst, device=dst_nodes.device)
    targets = dst_nodes[with_edges]
    src, _, eids = g.in_edges(targets, form="all")
    # in_edges lists the in-edges of each target in turn, in the order of `targets`.
    dst_local = torch.repeat_interleave(with_edges, g.in_degrees(targets).long())
    if excluded is not None and excluded.numel() > 0:
        at = torch.searchsorted(excluded, eids).clamp_(max=excluded.numel() - 1)
        keep = excluded[at] != eids
        # Boolean indexing keeps the per-target order, so the source order stays deterministic.
        src, eids, dst_local = src[keep], eids[keep], dst_local[keep]
    unique_src, inverse = torch.unique(src, return_inverse=True)
    dst_sorted, dst_order = torch.sort(dst_nodes)
    at = torch.searchsorted(dst_sorted, unique_src).clamp_(max=num_dst - 1)
    is_dst = dst_sorted[at] == unique_src
    extra = unique_src[~is_dst]
    position = torch.empty_like(at)
    position[is_dst] = dst_order[at[is_dst]]
    position[~is_dst] = num_dst + torch.arange(extra.numel(), device=at.device)
    block = dgl.create_block(
        (position[inverse], dst_local), num_src_nodes=num_dst + extra.numel(),
        num_dst_nodes=num_dst, idtype=g.idtype, device=g.device,
    )
    block.srcdata[NID] = torch.cat([dst_nodes, extra.to(dst_nodes.dtype)])
    block.dstdata[NID] = dst_nodes
    block.edata[EID] = eids
    return block


def _one_hop_block(g: DGLGraph, dst: Tensor, excluded: Tensor | None = None) -> dgl.DGLGraph:
    """Block whose destinations are ``dst`` with all their in-edges (the full 1-hop view)."""
    return _in_edge_block(g, dst, excluded=excluded)


def _set_edge_weights(g: DGLGraph, edge_weight: str | None, blocks: Sequence) -> None:
    if edge_weight is None:
        return
    for block in blocks:
        block.edata[keys.EDGE_WEIGHTS] = edge_weights_of(g, edge_weight, block.edata[EID])


def history_blocks(
    g: DGLGraph,
    seeds: Tensor,
    num_layers: int,
    edge_weight: str | None = None,
    *,
    exclude_eids: Tensor | Sequence[int] | None = None,
) -> tuple[Tensor, Tensor, list]:
    """Blocks of the paper's Eq. 7: the batch and its full 1-hop in-neighbourhood, every layer.

    Every block has the same node set, the batch followed by its halo (in-neighbours outside the
    batch), so the node count per layer is constant whatever ``num_layers`` is.  Only the batch
    rows receive edges (all their in-edges in ``g``), so a layer computes the batch exactly from
    its inputs; the halo rows of every hidden layer's input are filled from history by
    :class:`dgl_mvs.History`.  The structure is built once per step and shared by all layers.

    Parameters
    ----------
    g : DGLGraph
        Homogeneous graph.
    seeds : Tensor
        Unique node IDs of the batch.
    num_layers : int
        Number of GNN layers (blocks).
    edge_weight : str, optional
        ``g.edata`` key of full-graph edge weights (e.g. :func:`dgl_mvs.gcn_norm`), copied to
        ``block.edata["edge_weights"]``.
    exclude_eids : Tensor or list[int], optional
        Edge IDs of ``g`` to leave out of every block (as passed by
        :func:`dgl.dataloading.as_edge_prediction_sampler`); the blocks are those of the graph
        without these edges.  None or empty: nothing is excluded.

    Returns
    -------
    tuple
        ``(input_nodes, output_nodes, blocks)``.

    Raises
    ------
    ValueError
        If ``exclude_eids`` holds IDs outside ``[0, g.num_edges())``.

    Examples
    --------
    >>> import dgl, torch
    >>> from dgl_mvs.blocks import history_blocks
    >>> g = dgl.graph((torch.tensor([1, 2, 3]), torch.tensor([0, 0, 1])))
    >>> inputs, outputs, blocks = history_blocks(g, torch.tensor([0]), num_layers=2)
    >>> inputs.tolist(), [b.num_edges() for b in blocks]
    ([0, 1, 2], [2, 2])
    >>> inputs, _, blocks = history_blocks(g, torch.tensor([0]), 2, exclude_eids=torch.tensor([0]))
    >>> inputs.tolist(), [b.edata[dgl.EID].tolist() for b in blocks]
    ([0, 2], [[1], [1]])
    """
    g = check_graph(g)
    seeds = _check_seeds(g, seeds)
    check_num_layers(num_layers)
    excluded = _check_exclude(g, exclude_eids)
    last = _one_hop_block(g, seeds, excluded)
    nodes = last.srcdata[NID]
    num_nodes, num_seeds = last.num_src_nodes(), last.num_dst_nodes()
    src, dst = last.edges()
    # Every inner block reuses the last block's edges: the batch is the prefix of the node
    # set, so the local destination IDs stay valid with the whole node set as destinations.
    fresh_inner = torch.zeros(num_nodes, dtype=torch.bool, device=g.device)
    fresh_inner[:num_seeds] = True
    all_fresh = torch.ones(num_nodes, dtype=torch.bool, device=g.device)
    blocks = []
    for layer in range(num_layers - 1):
        block = dgl.create_block(
            (src, dst), num_src_nodes=num_nodes, num_dst_nodes=num_nodes,
            idtype=g.idtype, device=g.device,
        )
        block.srcdata[NID] = nodes
        block.dstdata[NID] = nodes
        block.edata[EID] = last.edata[EID]
        block.srcdata[keys.FRESH] = all_fresh if layer == 0 else fresh_inner
        blocks.append(block)
    last.srcdata[keys.FRESH] = all_fresh if num_layers == 1 else fresh_inner
    blocks.append(last)
    _set_edge_weights(g, edge_weight, blocks)
    return nodes, seeds, blocks


def exact_blocks(
    g: DGLGraph,
    seeds: Tensor,
    num_layers: int,
    edge_weight: str | None = None,
    *,
    exclude_eids: Tensor | Sequence[int] | None = None,
) -> tuple[Tensor, Tensor, list]:
    """Blocks of the full ``num_layers``-hop neighbourhood (Eq. 6): no sampling, no history.

    Used at checkpoints and for inference.  Every source row is computed fresh, so the history
    hook writes every layer's input into history (a refresh of the whole neighbourhood).

    Parameters
    ----------
    g : DGLGraph
        Homogeneous graph.
    seeds : Tensor
        Unique node IDs of the batch.
    num_layers : int
        Number of GNN layers (blocks).
    edge_weight : str, optional
        ``g.edata`` key of full-graph edge weights, copied to ``block.edata["edge_weights"]``.
    exclude_eids : Tensor or list[int], optional
        Edge IDs of ``g`` to leave out of every block at every layer (as passed by
        :func:`dgl.dataloading.as_edge_prediction_sampler`); the blocks are those of the graph
        without these edges.  None or empty: nothing is excluded.

    Returns
    -------
    tuple
        ``(input_nodes, output_nodes, blocks)``.

    Raises
    ------
    ValueError
        If ``exclude_eids`` holds IDs outside ``[0, g.num_edges())``.

    Examples
    --------
    >>> import dgl, torch
    >>> from dgl_mvs.blocks import exact_blocks
    >>> g = dgl.graph((torch.tensor([1, 2, 3]), torch.tensor([0, 0, 1])))
    >>> inputs, outputs, blocks = exact_blocks(g, torch.tensor([0]), num_layers=2)
    >>> sorted(inputs.tolist()), [b.num_dst_nodes() for b in blocks]
    ([0, 1, 2, 3], [3, 1])
    """
    g = check_graph(g)
    seeds = _check_seeds(g, seeds)
    check_num_layers(num_layers)
    excluded = _check_exclude(g, exclude_eids)
    blocks, dst = [], seeds
    for _ in range(num_layers):
        block = _one_hop_block(g, dst, excluded)
        block.srcdata[keys.FRESH] = torch.ones(
            block.num_src_nodes(), dtype=torch.bool, device=g.device
        )
        blocks.insert(0, block)
        dst = block.srcdata[NID]
    _set_edge_weights(g, edge_weight, blocks)
    return dst, seeds, blocks


def _sample_per_destination(
    dst: Tensor, num_dst: int, fanout: int, generator: torch.Generator | None
) -> Tensor:
    """Mark, for each destination, ``fanout`` of its edges uniformly without replacement.

    Every edge gets a random key; each of ``fanout`` rounds marks, per destination, the edge
    with the smallest key not yet marked (a scatter-min over the edges).  Keeping the
    ``fanout`` smallest keys is a uniform draw without replacement, in ``O(fanout * E)``.
    """
    num_edges = dst.numel()
    picked = torch.zeros(num_edges, dtype=torch.bool, device=dst.device)
    if fanout < 0:
        return picked.fill_(True)
    priority = torch.rand(num_edges, generator=generator, dtype=torch.float64).to(dst.device)
    done = 2.0  # above every key: marks edges already picked
    for _ in range(fanout):
        remaining = priority.masked_fill(picked, done)
        smallest = torch.full((num_dst,), done, dtype=torch.float64, device=dst.device)
        smallest.scatter_reduce_(0, dst, remaining, reduce="amin")
        picked |= (remaining == smallest[dst]) & (remaining < done)
    return picked


def control_variate_blocks(
    g: DGLGraph,
    seeds: Tensor,
    fanouts: Sequence[int],
    edge_weight: str | None = None,
    generator: torch.Generator | None = None,
    *,
    exclude_eids: Tensor | Sequence[int] | None = None,
) -> tuple[Tensor, Tensor, list]:
    """Blocks for the control-variate estimator of VR-GCN (Chen et al., 2018).

    For a destination ``v`` computed fresh at a layer, the layer aggregates

    ``z_v = sum_{u in N(v)} a_uv hbar_u + |N(v)|/s_v * sum_{u in sampled(v)} a_uv (h_u - hbar_u)``

    where ``hbar`` is history, ``h`` the fresh input and ``s_v = min(fanout, |N(v)|)``.  Each
    block holds the full in-edges of its fresh destinations with
    ``edata["mvs_history_weights"] = a_uv`` (first sum) and ``edata["edge_weights"]`` equal to
    the scaled ``|N(v)| / s_v * a_uv`` on sampled edges and 0 elsewhere (second sum);
    ``edata["mvs_sampled"]`` marks the sampled edges.  Only the
    batch, the sampled neighbours and their own sampled neighbours (recursively) are computed
    fresh; the full neighbourhoods enter through histories.  ``a_uv`` is ``g.edata[edge_weight]``
    or, without one, ``1 / |N(v)|`` (mean aggregation).  Consume the blocks with
    :class:`dgl_mvs.nn.CVGraphConv` / :class:`dgl_mvs.nn.CVSAGEConv`, or wrap any layer in
    :class:`dgl_mvs.nn.ControlVariate`.

    Parameters
    ----------
    g : DGLGraph
        Homogeneous graph.
    seeds : Tensor
        Unique node IDs of the batch.
    fanouts : list[int]
        Sampled neighbours per destination for each layer, first layer first (as in
        :class:`dgl.dataloading.NeighborSampler`); -1 takes all.
    edge_weight : str, optional
        ``g.edata`` key of full-graph weights ``a_uv``.
    generator : torch.Generator, optional
        Source of randomness for the neighbour draws (CPU generator).
    exclude_eids : Tensor or list[int], optional
        Edge IDs of ``g`` to leave out of every block (as passed by
        :func:`dgl.dataloading.as_edge_prediction_sampler`).  ``N(v)`` and ``|N(v)|`` are then
        the in-neighbourhood and degree without these edges, so the estimator is unbiased for
        the graph without them (``g.edata[edge_weight]`` is used as given, not renormalised).
        None or empty: nothing is excluded.

    Returns
    -------
    tuple
        ``(input_nodes, output_nodes, blocks)``.

    Raises
    ------
    ValueError
        If ``exclude_eids`` holds IDs outside ``[0, g.num_edges())``.

    Examples
    --------
    >>> import dgl, torch
    >>> from dgl_mvs.blocks import control_variate_blocks
    >>> g = dgl.graph((torch.tensor([1, 2, 3, 0]), torch.tensor([0, 0, 0, 1])))
    >>> _, _, blocks = control_variate_blocks(g, torch.tensor([0]), [2, 1])
    >>> blocks[-1].num_edges(), int((blocks[-1].edata["edge_weights"] > 0).sum())
    (3, 1)
    """
    g = check_graph(g)
    seeds = _check_seeds(g, seeds)
    check_num_layers(len(fanouts))
    excluded = _check_exclude(g, exclude_eids)
    blocks: list = []
    dst_nodes = seeds
    # Positions of the fresh destinations among the destinations (all of them at the top).
    fresh_dst_pos = torch.arange(seeds.numel(), device=g.device)
    for layer in reversed(range(len(fanouts))):
        block = _in_edge_block(g, dst_nodes, fresh_dst_pos, excluded=excluded)
        eids = block.edata[EID]
        src_local, dst_local = block.edges()
        dst_local = dst_local.long()
        # Every in-edge of a fresh destination is in the block (less the excluded ones): block
        # degrees are full degrees of the graph without the excluded edges.
        degree = block.in_degrees().to(torch.float32)[dst_local]
        picked = _sample_per_destination(
            dst_local, block.num_dst_nodes(), fanouts[layer], generator
        )
        sampled_count = degree if fanouts[layer] < 0 else degree.clamp(max=float(fanouts[layer]))
        base = edge_weights_of(g, edge_weight, eids)
        base = (1.0 / degree) if base is None else base.to(torch.float32)
        block.edata[keys.HISTORY_WEIGHTS] = base
        block.edata[keys.SAMPLED] = picked
        block.edata[keys.EDGE_WEIGHTS] = torch.where(
            picked, base * degree / sampled_count, torch.zeros_like(base)
        )
        num_src = block.num_src_nodes()
        if layer == 0:  # raw features: every input is exact
            fresh_src = torch.ones(num_src, dtype=torch.bool, device=g.device)
        else:  # the fresh destinations themselves and their sampled neighbours
            fresh_src = torch.zeros(num_src, dtype=torch.bool, device=g.device)
            fresh_src[fresh_dst_pos] = True
            fresh_src[src_local[picked].long()] = True
        block.srcdata[keys.FRESH] = fresh_src
        blocks.insert(0, block)
        dst_nodes = block.srcdata[NID]
        fresh_dst_pos = torch.nonzero(fresh_src).squeeze(1)
    return dst_nodes, seeds, blocks

