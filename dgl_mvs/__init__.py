"""dgl_mvs: Minimal Variance Sampling (Cong et al., KDD 2020) for DGL's data loading.

The pieces, each in its own module:

- :func:`mvs_probabilities`, :func:`systematic_draw`, :func:`poisson_draw`,
  :func:`horvitz_thompson_weights`: the optimal distribution, the draws and the weights;
- :func:`cross_entropy_grad_norm`, :func:`bce_grad_norm`, :func:`autograd_grad_norm` and
  :class:`ScoreTable`: per-node gradient-norm scores, kept in ``g.ndata``;
- :func:`history_blocks`, :func:`control_variate_blocks`, :func:`exact_blocks`: DGL blocks;
- :class:`History`: history embeddings in ``g.ndata``, exchanged with ``dgl.nn`` layers;
- :class:`MVSSampler`: the sampler for ``dgl.dataloading.DataLoader``; by default its blocks
  are :class:`OneHopSampler`'s (a precomputed first layer, exact or control-variate layers
  above: :mod:`dgl_mvs.onehop`, :mod:`dgl_mvs.aggregation`);
- :func:`gradient_variance`: is importance sampling paying off (:mod:`dgl_mvs.diagnostics`);
- :mod:`dgl_mvs.nn`: control-variate layers; :mod:`dgl_mvs.data`: datasets.
"""
from ._stack import check_stack, stack_versions

check_stack()

from . import aggregation, data, diagnostics, keys, nn, training  # noqa: E402
from .block_samplers import ControlVariateSampler, ExactSampler, HistorySampler  # noqa: E402
from .blocks import control_variate_blocks, exact_blocks, history_blocks  # noqa: E402
from .draws import horvitz_thompson_weights, poisson_draw, systematic_draw  # noqa: E402
from .checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from .history import History  # noqa: E402
from .diagnostics import gradient_variance  # noqa: E402
from .normalization import gcn_norm, mean_norm  # noqa: E402
from .onehop import OneHopSampler  # noqa: E402
from .probabilities import mvs_probabilities  # noqa: E402
from .sampler import MVSSampler  # noqa: E402
from .scores import (  # noqa: E402
    ScoreTable,
    autograd_grad_norm,
    bce_grad_norm,
    cross_entropy_grad_norm,
)
from .variance import estimator_variance, uniform_vs_mvs_variance_gap  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "check_stack",
    "stack_versions",
    "keys",
    "mvs_probabilities",
    "poisson_draw",
    "systematic_draw",
    "horvitz_thompson_weights",
    "cross_entropy_grad_norm",
    "bce_grad_norm",
    "autograd_grad_norm",
    "ScoreTable",
    "estimator_variance",
    "uniform_vs_mvs_variance_gap",
    "history_blocks",
    "control_variate_blocks",
    "exact_blocks",
    "History",
    "MVSSampler",
    "OneHopSampler",
    "gradient_variance",
    "HistorySampler",
    "ExactSampler",
    "ControlVariateSampler",
    "save_checkpoint",
    "load_checkpoint",
    "gcn_norm",
    "mean_norm",
]
