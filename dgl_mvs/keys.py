"""Names of the node and edge data that dgl_mvs reads and writes.

Kept in one place so that the sampler, the history and the ``dgl_mvs.nn`` modules agree, and
so that users can look the names up instead of spelling strings.
"""

#: ``g.ndata`` key of the per-node score table (upper bounds of per-sample gradient norms).
SCORE = "mvs_score"
#: ``blocks[-1].dstdata`` key of the Horvitz-Thompson loss weight of each output node.
WEIGHT = "mvs_weight"
#: ``blocks[-1].dstdata`` key of the global training step a mini-batch was drawn for.
STEP = "mvs_step"
#: ``blocks[-1].dstdata`` key: a number identifying the MVSSampler that drew the blocks.
SAMPLER = "mvs_sampler"
#: ``blocks[-1].dstdata`` key, present when the step was drawn before its interval's scores
#: were written (from the score table as it was).
UNSCORED = "mvs_unscored"
#: ``blocks[-1].dstdata`` key under ``torch.distributed`` (``(num_seeds, 2)`` int64, the same
#: row for every node): size and fingerprint of the step's global draw, which the ranks
#: compare when they exchange scores.
DRAW = "mvs_draw"
#: ``block.srcdata`` key: True where the layer input is computed fresh by the previous layer,
#: False where it must come from history (the "halo").
FRESH = "mvs_fresh"
#: ``block.edata`` key of DGL's edge-weight convention, read by ``GraphConv(edge_weight=...)``.
EDGE_WEIGHTS = "edge_weights"
#: ``block.edata`` key on control-variate blocks: full-graph weight ``a_uv`` of every edge,
#: used to aggregate histories over the full neighbourhood.
HISTORY_WEIGHTS = "mvs_history_weights"
#: ``block.edata`` key on control-variate blocks: True on the sampled edges.
SAMPLED = "mvs_sampled"
#: ``block.srcdata`` key where the history hook leaves the history of every source node of a
#: control-variate block for the control-variate layers.
HISTORY = "mvs_history"


def history_key(layer: int) -> str:
    """``g.ndata`` key of the history of the input of ``layer`` (``layer >= 1``)."""
    return f"mvs_hist_{layer}"


def history_clock_key(layer: int) -> str:
    """``g.ndata`` key of the :attr:`History.clock <dgl_mvs.History.clock>` at which each
    node's history of ``layer`` was last written (-1: never)."""
    return f"mvs_hist_clock_{layer}"


# Blocks of dgl_mvs.OneHopSampler (control-variate layers and snapshot refreshes).
#: ``block.srcdata`` key: multiplier of each source row of an exact block whose layer reads
#: source degrees (``GraphConv(norm="both"/"left")``).
SCALE = "mvs_scale"
#: ``block.dstdata`` key on control-variate blocks: the history part of each destination's
#: estimate, ``S_v - d_v / s_v * sum_{drawn u} c_uv hbar_u``.
PSEUDO = "mvs_pseudo"
#: ``block.dstdata`` key on control-variate blocks: per destination (padded to the largest
#: ``s_v``), the rows of the layer below's output behind its drawn in-edges.
DRAWN = "mvs_drawn"
#: ``block.dstdata`` key on control-variate blocks: the drawn in-edges' weights
#: ``d_v / s_v * c_uv`` (0 on padding).
DRAWN_WEIGHT = "mvs_drawn_weight"
#: ``block.dstdata`` key on control-variate blocks: ``s_v``, the number of drawn in-edges.
DRAWN_COUNT = "mvs_drawn_count"
#: ``block.dstdata`` key on control-variate blocks: the factor ``sqrt(s_v / d_v)`` of the
#: drawn rows' dropout noise ``h_u - mu_u`` against their mean part ``mu_u`` (VR-GCN's
#: dropout-aware estimator, see :mod:`dgl_mvs.dropout`).
NOISE = "mvs_noise"
#: ``block.srcdata`` key: the whole layer input of a refresh block, read from the snapshot.
FILL = "mvs_fill"
#: ``block.dstdata`` key of a first block whose layer is hooked: the number of the
#: :class:`dgl_mvs.aggregation.FeatureAggregates` it was built from (0: none in this process).
FIRST = "mvs_first"
#: ``block.dstdata`` key, on first blocks of layers without a self term (``GraphConv``,
#: ``SAGEConv('gcn')``): the hook gives the layer the aggregate rows only.
AGGREGATE_ONLY = "mvs_aggregate_only"
#: ``block.dstdata`` key of a refresh pass's marker block: the hook of the layer called on it
#: stops the forward pass and hands back the layer's input.
STOP = "mvs_stop"


def snapshot_key(layer: int) -> str:
    """``g.ndata`` key of the control-variate history snapshot of the input of ``layer``."""
    return f"mvs_snap_{layer}"


def snapshot_agg_key(layer: int) -> str:
    """``g.ndata`` key of ``layer``'s full-graph aggregation of its history snapshot."""
    return f"mvs_snap_agg_{layer}"
