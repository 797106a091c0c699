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
#: ``block.srcdata`` key: row of the previous layer's output behind each source row (-1: none).
ROW = "mvs_row"
#: ``block.srcdata`` key: multiplier of each source row on a control-variate block.
SCALE = "mvs_scale"
#: ``block.dstdata`` key: value of each destination's pseudo source row on a control-variate
#: block (the history part of the control-variate estimator).
PSEUDO = "mvs_pseudo"
#: ``block.srcdata`` key on control-variate blocks: the factor of each source row's dropout
#: noise ``h_u - mu_u`` against its mean part ``mu_u`` (``sqrt(s_v / d_v)`` on drawn rows:
#: VR-GCN's dropout-aware estimator, see :mod:`dgl_mvs.dropout`).
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
