"""dgl_mvs: Minimal Variance Sampling (Cong et al., KDD 2020) for DGL's data loading.

What a training script needs is here:

- the sampler: :class:`MVSSampler` for ``dgl.dataloading.DataLoader``, and the block samplers
  it builds its blocks with (:class:`OneHopSampler`, the default; :class:`HistorySampler`,
  :class:`ControlVariateSampler`, :class:`ExactSampler`), also usable alone with uniform seeds;
- the history: :class:`History`, history embeddings exchanged with ``dgl.nn`` layers;
- the layers: :mod:`dgl_mvs.nn` (control-variate layers) and the edge weights
  :func:`gcn_norm`, :func:`mean_norm`;
- the scores: :func:`cross_entropy_grad_norm`, :func:`bce_grad_norm`,
  :func:`autograd_grad_norm`, the per-node gradient norms given to
  :meth:`MVSSampler.update_scores`, and :func:`gradient_variance`, the check during training
  that the sampler's seeds pay off (variance against uniform seeds, and the oracle);
- checkpoints: :func:`save_checkpoint`, :func:`load_checkpoint`;
- data: :mod:`dgl_mvs.data`; names of node and edge data: :mod:`dgl_mvs.keys`.

The parts live in their own modules: :mod:`~dgl_mvs.probabilities`, :mod:`~dgl_mvs.draws`
(the distribution, the draws, the weights), :mod:`~dgl_mvs.scores` (also the score table),
:mod:`~dgl_mvs.blocks` (the block builders), :mod:`~dgl_mvs.schedule` (the step schedule),
:mod:`~dgl_mvs.distributed` (one sampler across data-parallel ranks),
:mod:`~dgl_mvs.onehop` and :mod:`~dgl_mvs.aggregation`, :mod:`~dgl_mvs.variance` (closed-form
estimator variances), :mod:`~dgl_mvs.training`.
"""
from ._stack import check_stack

check_stack()

# Submodules, imported so that ``dgl_mvs.draws.systematic_draw`` and the like resolve.
from . import (  # noqa: E402, F401
    aggregation,
    blocks,
    data,
    diagnostics,
    distgraph,
    distributed,
    draws,
    hooks,
    keys,
    nn,
    probabilities,
    schedule,
    scores,
    training,
    variance,
)
from .block_samplers import ControlVariateSampler, ExactSampler, HistorySampler  # noqa: E402
from .checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from .diagnostics import gradient_variance  # noqa: E402
from .distgraph import DistMVSSampler, DistOneHopSampler  # noqa: E402
from .history import History  # noqa: E402
from .hooks import remove_hooks  # noqa: E402
from .normalization import gcn_norm, mean_norm  # noqa: E402
from .onehop import OneHopSampler  # noqa: E402
from .sampler import MVSSampler  # noqa: E402
from .scores import autograd_grad_norm, bce_grad_norm, cross_entropy_grad_norm  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "__version__",
    # the sampler and its block samplers
    "MVSSampler",
    "OneHopSampler",
    "HistorySampler",
    "ControlVariateSampler",
    "ExactSampler",
    "DistMVSSampler",  # on DistDGL's DistGraph
    "DistOneHopSampler",
    "remove_hooks",  # of OneHopSampler and History, from a model
    # the history
    "History",
    # the layers
    "nn",
    "gcn_norm",
    "mean_norm",
    # the scores
    "cross_entropy_grad_norm",
    "bce_grad_norm",
    "autograd_grad_norm",
    "gradient_variance",
    # checkpoints
    "save_checkpoint",
    "load_checkpoint",
    # data and names
    "data",
    "keys",
]
