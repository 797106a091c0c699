"""Is importance sampling paying off?  Gradient variance of the sampler against uniform seeds.

:func:`gradient_variance` measures, at the model's current weights, what the paper's Figure 4
plots: the variance of the mini-batch gradient when seeds come from the sampler's current
probabilities, relative to uniform seeds of the same batch size on the same kind of blocks,
next to the ratio that the optimal probabilities would give with exact, fresh per-node
gradient norms (the oracle).  Call it every few hundred steps during training and plot the
ratios: below 1 the sampler reduces variance; near the oracle it does as well as MVS can.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .draws import horvitz_thompson_weights, systematic_draw
from .probabilities import mvs_probabilities
from .scores import bce_grad_norm, cross_entropy_grad_norm

__all__ = ["gradient_variance"]


def _per_node_loss(logits: Tensor, labels: Tensor, multilabel: bool) -> Tensor:
    if multilabel:
        return F.binary_cross_entropy_with_logits(
            logits, labels.to(logits.dtype), reduction="none"
        ).mean(1)
    return F.cross_entropy(logits, labels, reduction="none")


def _input(g, blocks, input_nodes: Tensor, feature: str) -> Tensor:
    """The first layer's input: set by one-hop blocks, gathered for the other kinds."""
    value = blocks[0].srcdata.get(feature) if feature in blocks[0].srcdata else None
    if torch.is_tensor(value):
        return value
    return g.ndata[feature][input_nodes.long()]


def _flat_grad(params: list[Tensor]) -> Tensor:
    return torch.cat([
        (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params
    ])


def _ratio(value: float, reference: float) -> float:
    return value / reference if reference > 0 else math.nan


def _poisson_variance(probs: Tensor, norms: Tensor) -> float:
    """``sum (1 - p) / p g^2 / n^2``: the variance of the HT mean with independent draws."""
    n = norms.numel()
    return float(((1.0 - probs) / probs * norms.double() ** 2).sum()) / n**2


def gradient_variance(
    sampler,
    model: nn.Module,
    *,
    labels: str | None = None,
    multilabel: bool | None = None,
    repeats: int = 16,
    chunk_size: int = 4096,
    seed: int = 0,
) -> dict[str, float | bool]:
    """Variance of the sampler's mini-batch gradient relative to uniform seeds, and the oracle.

    Two measurements at the current weights, with dropout off (the model runs in eval mode
    and every submodule is put back in its own mode afterwards; no parameter or optimizer
    state changes):

    * **realised**: ``repeats`` batches drawn from the sampler's current probabilities and
      ``repeats`` uniform batches of the same size, each on the sampler's blocks; the variance
      (trace of the covariance) of the full parameter gradient of the weighted loss over the
      draws, as a ratio sampler / uniform.  This is what training sees.
    * **oracle**: the exact per-node gradient norms of every training node (one forward over
      all of them), the closed-form variance ``sum (1 - p_i) / p_i g_i^2 / n^2`` of the
      Horvitz-Thompson mean under the sampler's probabilities, under the optimal
      probabilities for these exact norms, and under uniform ones.

    Parameters
    ----------
    sampler : MVSSampler
        A sampler with one-hop (default) or other block kinds; its schedule is not advanced.
    model : nn.Module
        Called as ``model(blocks, x)`` with ``x = blocks[0].srcdata[feature]``.
    labels : str, optional
        ``g.ndata`` key of the labels (default: the sampler's, ``prefetch_labels[0]`` or
        ``"label"``).
    multilabel : bool, optional
        Binary cross-entropy (mean over classes) instead of cross-entropy (default: the
        sampler's ``multilabel``).
    repeats : int
        Batches per estimator for the realised variance.
    chunk_size : int
        Nodes per forward for the exact norms.
    seed : int
        Seed of the diagnostic's own draws.

    Returns
    -------
    dict
        ``realised_ratio`` (sampler / uniform), ``realised_sampler``, ``realised_uniform``,
        ``oracle_ratio`` (optimal p with exact norms / uniform), ``sampler_ratio`` (the
        sampler's p with exact norms / uniform, closed form), ``batch_size``; and for a
        sampler that chooses between importance-sampled and uniform seeds
        (:meth:`dgl_mvs.MVSSampler.seed_report`), ``importance_sampled`` (whether its seeds
        are importance-sampled now) and ``predicted_ratio`` (the ratio it measured on the
        fresh scores of the last steps, for the share it chose; nan before any).
    """
    g = sampler.g
    pool = sampler.train_nids
    n = pool.numel()
    batch = sampler.batch_size
    feature = sampler.input_feature
    params = [p for p in model.parameters() if p.requires_grad]
    labels = labels if labels is not None else getattr(sampler, "label_key", "label")
    if multilabel is None:
        multilabel = bool(getattr(sampler, "multilabel", False))
    if labels not in g.ndata:
        raise ValueError(
            f"gradient_variance reads the labels from g.ndata[{labels!r}], which the graph "
            f"does not have (it has {list(g.ndata.keys())}): pass labels='your_key'"
        )
    label_values = g.ndata[labels]
    gen = torch.Generator().manual_seed(seed)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    saved = [None if p.grad is None else p.grad.clone() for p in params]
    try:
        probs = sampler.current_probabilities().to(pool.device)

        def estimate(picked: Tensor, weights: Tensor) -> Tensor:
            seeds = pool[picked]
            input_nodes, out_nodes, blocks = sampler.blocks_for(seeds, gen)
            logits = model(blocks, _input(g, blocks, input_nodes, feature))
            y = label_values[out_nodes.long()].to(logits.device)
            loss = (weights.to(logits) * _per_node_loss(logits, y, multilabel)).sum()
            for p in params:
                p.grad = None
            loss.backward()
            return _flat_grad(params)

        mvs_grads, uniform_grads = [], []
        for _ in range(repeats):
            picked = systematic_draw(probs, gen)
            mvs_grads.append(estimate(picked, horvitz_thompson_weights(probs[picked], n)))
            picked = torch.randperm(n, generator=gen)[:batch].to(pool.device)
            uniform_grads.append(estimate(picked, torch.full((picked.numel(),), 1.0 / batch)))

        def spread(grads: list[Tensor]) -> float:
            stack = torch.stack(grads).double()
            return float(((stack - stack.mean(0)) ** 2).sum(1).sum() / (len(grads) - 1))

        realised_sampler, realised_uniform = spread(mvs_grads), spread(uniform_grads)
        # Exact per-node gradient norms of every training node, forward only.
        norms = []
        with torch.no_grad():
            for chunk in pool.split(chunk_size):
                input_nodes, out_nodes, blocks = sampler.blocks_for(chunk, gen)
                logits = model(blocks, _input(g, blocks, input_nodes, feature))
                y = label_values[out_nodes.long()].to(logits.device)
                if multilabel:
                    norms.append(bce_grad_norm(logits, y.to(logits.dtype)).cpu())
                else:
                    norms.append(cross_entropy_grad_norm(logits, y).cpu())
        exact = torch.cat(norms).double()
        uniform_p = torch.full_like(exact, min(1.0, batch / n))
        oracle_p = mvs_probabilities(exact, batch)
        var_uniform = _poisson_variance(uniform_p, exact)
    finally:
        for p, grad in zip(params, saved):
            p.grad = grad
        for module, mode in modes:  # each its own mode (a frozen BatchNorm stays in eval)
            module.train(mode)
    seeds = {}
    if getattr(sampler, "_switch", None) is not None:
        report = sampler.seed_report()
        seeds = {"importance_sampled": report.mode == "mvs", "predicted_ratio": report.ratio}
    return {
        **seeds,
        "batch_size": batch,
        "realised_sampler": realised_sampler,
        "realised_uniform": realised_uniform,
        "realised_ratio": realised_sampler / realised_uniform if realised_uniform > 0
        else math.nan,
        "sampler_ratio": _ratio(_poisson_variance(probs.double().cpu(), exact), var_uniform),
        "oracle_ratio": _ratio(_poisson_variance(oracle_p, exact), var_uniform),
    }

