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


def history_step_key(layer: int) -> str:
    """``g.ndata`` key of the step at which each node's history of ``layer`` was last written."""
    return f"mvs_hist_step_{layer}"
