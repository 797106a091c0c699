"""Small helpers that keep an MVS training loop a plain DGL loop.

Everything Algorithm 1 needs beyond the sampler: the weighted loss, the scores fed back to the
sampler, layer-wise full-graph evaluation, and early stopping on validation.
"""
from __future__ import annotations

import copy
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from dgl import DGLGraph
from torch import Tensor, nn

from . import keys
from .history import History
from .scores import bce_grad_norm, cross_entropy_grad_norm

__all__ = [
    "per_node_loss",
    "weighted_loss",
    "gradient_scores",
    "metric",
    "evaluate",
    "EarlyStopping",
]


def per_node_loss(logits: Tensor, labels: Tensor, multilabel: bool = False) -> Tensor:
    """Cross-entropy per node, or binary cross-entropy averaged over classes (multi-label)."""
    if multilabel:
        return F.binary_cross_entropy_with_logits(
            logits, labels.to(logits.dtype), reduction="none"
        ).mean(1)
    return F.cross_entropy(logits, labels, reduction="none")


def weighted_loss(
    blocks: Sequence, logits: Tensor, labels: Tensor, multilabel: bool = False
) -> Tensor:
    """``sum_i w_i loss_i`` with the sampler's weights, or the plain mean without them.

    With :class:`dgl_mvs.MVSSampler` blocks the result is an unbiased estimate of the mean
    loss over the training set; with other samplers it is the usual batch mean.
    """
    losses = per_node_loss(logits, labels, multilabel)
    last = blocks[-1]
    if last.is_block and keys.WEIGHT in last.dstdata:
        return (last.dstdata[keys.WEIGHT].to(losses.dtype) * losses).sum()
    return losses.mean()


def gradient_scores(
    logits: Tensor, labels: Tensor, multilabel: bool = False, last_input: Tensor | None = None
) -> Tensor:
    """Per-node gradient norms of :func:`per_node_loss` w.r.t. the logits (or last layer)."""
    logits = logits.detach()
    if multilabel:
        return bce_grad_norm(logits, labels.to(logits.dtype), last_input, mean_over_classes=True)
    return cross_entropy_grad_norm(logits, labels, last_input)


def metric(logits: Tensor, labels: Tensor, multilabel: bool = False) -> float:
    """Accuracy (single-label) or micro-F1 with logits thresholded at 0 (multi-label)."""
    if labels.numel() == 0:
        raise ValueError("no labelled nodes to evaluate")
    if not multilabel:
        return float((logits.argmax(1) == labels).float().mean())
    predicted = logits > 0
    truth = labels > 0.5
    true_pos = float((predicted & truth).sum())
    denominator = float(predicted.sum() + truth.sum())
    return 2 * true_pos / denominator if denominator > 0 else 0.0


@torch.no_grad()
def evaluate(
    model: Callable,
    history: History,
    masks: Mapping[str, Tensor],
    *,
    features: str | Tensor = "feat",
    labels: str | Tensor = "label",
    multilabel: bool = False,
    chunk_size: int = 4096,
    device: torch.device | str | None = None,
    edge_weight: str | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Metric of each mask from layer-wise full-graph inference at the current weights.

    The inference is :meth:`History.refresh`, so it also leaves exact histories behind.

    Parameters
    ----------
    model : nn.Module or callable
        ``model(blocks, x)``, its layers attached to ``history``.
    history : History
        The history of the graph (any model can use one for evaluation).
    masks : dict[str, Tensor]
        Name to boolean node mask, e.g. ``{"val": g.ndata["val_mask"]}``.
    """
    g: DGLGraph = history.g
    label_values = g.ndata[labels] if isinstance(labels, str) else labels
    outputs = history.refresh(
        model, features, chunk_size=chunk_size, device=device, edge_weight=edge_weight,
        progress=progress,
    )
    results = {}
    for name, mask in masks.items():
        nodes = torch.nonzero(mask.to(outputs.device)).squeeze(1)
        results[name] = metric(
            outputs[nodes], label_values.to(outputs.device)[nodes], multilabel
        )
    return results


class EarlyStopping:
    """Stop when the validation metric has not improved by ``min_delta`` for ``patience`` checks.

    Keeps a copy of the best weights, so that the test metric can be taken with them (the
    paper stops when validation does not improve by 0.01 for 400 mini-batches: check every
    ``n`` steps with ``patience = 400 / n``).

    Examples
    --------
    >>> import torch
    >>> from dgl_mvs.training import EarlyStopping
    >>> model = torch.nn.Linear(2, 2)
    >>> stopper = EarlyStopping(patience=2)
    >>> [stopper.step(v, model) for v in (0.5, 0.6, 0.55, 0.58)]
    [False, False, False, True]
    >>> stopper.best
    0.6
    """

    def __init__(self, patience: int = 10, min_delta: float = 0.0):
        if patience < 1:
            raise ValueError(f"patience must be at least 1, got {patience}")
        self.patience = patience
        self.min_delta = min_delta
        self.best: float | None = None
        self.best_state: dict | None = None
        self.bad_checks = 0

    def step(self, value: float, model: nn.Module) -> bool:
        """Record a validation value; return True when training should stop."""
        if self.best is None or value > self.best + self.min_delta:
            self.best = value
            self.best_state = copy.deepcopy(model.state_dict())
            self.bad_checks = 0
        else:
            self.bad_checks += 1
        return self.bad_checks >= self.patience

    def restore(self, model: nn.Module) -> None:
        """Load the best weights seen into ``model``."""
        if self.best_state is not None:
            model.load_state_dict(self.best_state)
