"""The MVS block sampler for ``dgl.dataloading.DataLoader``."""
from __future__ import annotations

import math
import numbers
import os
import threading
import time
import warnings
from typing import NamedTuple, Sequence

import dgl
import torch
from dgl import DGLGraph
from dgl.dataloading import BlockSampler
from torch import Tensor, nn

from . import keys
from .block_samplers import choose_block_samplers, sample_blocks_with
from .blocks import check_edge_weight, check_graph
from .distributed import (agree_on_arguments, differing_arguments, draw_fingerprint,
                          exchange_rows, process_group_place, rank_share, sampler_group)
from .draws import SystematicDraws, horvitz_thompson_weights, poisson_draw, systematic_draw
from .history import attached_histories
from .onehop import OneHopSampler
from .probabilities import mix_uniform, mvs_probabilities
from .schedule import StepSchedule
from .scores import ScoreTable, bce_grad_norm, check_score_values, cross_entropy_grad_norm
from .seeds import IMPORTANCE, MIX_CHOICES, REFRESH_SHARE, STEP_SHARE, SeedReport, SeedSwitch

NID = dgl.NID
#: Largest graph whose score refreshes run as one full-graph forward (DGL's inference);
#: larger ones run on blocks in chunks of training nodes.
FULL_GRAPH_MAX_NODES = 4_000_000

__all__ = ["MVSSampler", "default_seed"]


def _in_main_thread_of_main_process() -> bool:
    return (
        torch.utils.data.get_worker_info() is None
        and threading.current_thread() is threading.main_thread()
    )


def _batch_step(blocks: Sequence) -> int:
    """The global step that MVSSampler drew ``blocks`` for, or a clear error."""
    last = blocks[-1]
    if keys.STEP not in last.dstdata:
        raise ValueError(
            "these blocks were not produced by MVSSampler (no 'mvs_step' in "
            "blocks[-1].dstdata)"
        )
    return int(last.dstdata[keys.STEP][0])


#: Uniform share until fresh scores have measured how the probabilities would do: uniform
#: seeds, since early scores go stale fastest (the diagnostic measured up to 1.7x the
#: gradient variance of uniform seeds in the first epoch on a degree-100 graph with 0.25).
INITIAL_MIX = 1.0
#: Uniform share when no refreshes are scheduled (``score_every=0``) and per-step scores
#: alone set the probabilities: a share that bounds the weights at four times the uniform ones.
FIXED_MIX = 0.25
#: Stream of the shared generator that shuffles an epoch's training nodes (one-hop blocks).
_EPOCH_ORDER_STREAM = 7


def _best_mix(stale: Tensor, fresh: Tensor, batch_size: int) -> float:
    """The uniform share whose probabilities from ``stale`` scores did best on ``fresh`` ones.

    The scores a refresh replaces are as stale as they get before the next refresh; the
    closed-form variance ``sum (1 - p) / p g^2`` of the Horvitz-Thompson mean, with ``p`` from
    those scores and ``g`` the fresh ones, measures how much their probabilities helped.
    Stale scores can do worse than uniform seeds (a node scored low long ago may have a large
    gradient now and a tiny probability): the choice then falls back towards uniform.
    """
    fresh = fresh.clamp(min=0.0)
    best, best_var = 1.0, math.inf
    for mix in MIX_CHOICES:
        p = mvs_probabilities(stale, batch_size, uniform_mix=mix)
        var = float(((1.0 - p) / p * fresh**2).sum())
        if var < best_var * (1.0 - 1e-9):
            best, best_var = mix, var
    return best


#: Seconds a rank waits for the other ranks in the sampler's collectives before raising
#: (:class:`MVSSampler`'s ``ddp_timeout``).  DDP's backward pass synchronises the ranks just
#: before ``update_scores``, so a healthy exchange waits for a small skew only.
DDP_TIMEOUT = 30.0
#: Seconds a DataLoader worker waits for what the training process publishes (the next
#: interval's probabilities, the control-variate snapshot) by default: the training process
#: publishes it within a few steps of the worker's request, unless ``update_scores`` is not
#: called; a long evaluation or checkpoint between two steps also fits in it.
WORKER_TIMEOUT = 600.0
#: A worker that has waited this long says so on stderr (once).
WORKER_NOTICE = 30.0
#: Under ``torch.distributed``, with the default ``score_timeout``: a worker also gives up
#: when the training process has been outside ``update_scores`` this long while it waits.
#: Ranks run in lockstep, so a healthy training process comes back to ``update_scores``
#: within a step; one that does not has skipped it, and the job must fail fast on every rank.
DDP_WORKER_IDLE = 40.0


def default_seed() -> int:
    """A seed drawn from DGL's global generator, the one ``dgl.seed`` sets.

    DGL's own block samplers (``NeighborSampler``, ...) draw from that generator, so
    ``dgl.seed(s)`` before building an :class:`MVSSampler` without ``seed=`` fixes its draws
    as it fixes DGL's; without ``dgl.seed`` each run draws another seed, as DGL's do.
    ``torch.manual_seed`` does not set it (nor DGL's sampled neighbours).  The draw advances
    DGL's generator by one number.
    """
    return int(dgl.random.choice(1 << 52, 1)[0])


def _importance(importance, overhead, switches: bool) -> str | None:
    """``importance`` checked (None: "auto" where the sampler switches), or a ValueError."""
    if overhead is not None and not (
            overhead == "measured" or not isinstance(overhead, (bool, str))
            and isinstance(overhead, numbers.Real) and 0.0 <= overhead <= 10.0):
        raise ValueError(
            f"overhead must be a share of a training step in [0, 10] (e.g. 0.05), or "
            f"'measured', got {overhead!r}"
        )
    if importance is None and overhead is None:
        return "auto" if switches else None
    if importance is not None and importance not in IMPORTANCE:
        raise ValueError(f"importance must be one of {IMPORTANCE}, got {importance!r}")
    if not switches:
        raise ValueError(
            "importance= and overhead= choose between importance-sampled and uniform seeds, "
            "which MVSSampler does with one-hop blocks (the default block_sampler) and "
            "probabilities='frozen' (the default): drop them for these settings"
        )
    return importance or "auto"


class _IntervalDraws(NamedTuple):
    """One interval's draws as fixed when it was published, prepared once per process."""

    interval: int
    #: Uniform share: 1.0 gives uniform seeds (an epoch order), without ``probs``.
    mix: float
    probs: Tensor | None
    #: Systematic drawer (None: Poisson draws, or uniform seeds).
    drawer: SystematicDraws | None
    #: ``1 / (p_i |pool|)`` of every pool position, float32.
    weights: Tensor | None


def _timeout(name: str, value, allow_zero: bool = False) -> float:
    """``value`` in seconds (``None``: :data:`WORKER_TIMEOUT`), or a ValueError naming ``name``."""
    if value is None:
        return WORKER_TIMEOUT
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
            value > 0 or allow_zero and value == 0) or math.isinf(value):
        kind = "a non-negative" if allow_zero else "a positive"
        raise ValueError(f"{name} must be {kind} number of seconds, got {value!r}")
    return float(value)


def _positive_int(name: str, value, minimum: int = 1) -> int:
    """``value`` as an int (numpy integers welcome), or a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        kind = "a positive" if minimum == 1 else "a non-negative"
        raise ValueError(f"{name} must be {kind} integer, got {value!r}")
    return int(value)


def _train_ids(g: DGLGraph, train_nids) -> Tensor:
    """``train_nids`` (IDs or a mask) as unique int64 node IDs of ``g``, or a clear error."""
    train_nids = torch.as_tensor(train_nids)
    if train_nids.dtype == torch.uint8:
        raise ValueError(
            "train_nids has dtype uint8, which could be a mask or node IDs: pass a boolean "
            "mask (mask.bool()) or integer node IDs (ids.long())"
        )
    if train_nids.is_floating_point() or train_nids.is_complex():
        raise ValueError(
            f"train_nids must be integer node IDs or a boolean mask, got {train_nids.dtype}"
        )
    if train_nids.dtype == torch.bool:
        if train_nids.dim() != 1 or train_nids.numel() != g.num_nodes():
            raise ValueError(
                f"a boolean train_nids mask needs one entry per node ({g.num_nodes()}), got "
                f"shape {tuple(train_nids.shape)}"
            )
        train_nids = torch.nonzero(train_nids).squeeze(1)
    if train_nids.dim() != 1 or train_nids.numel() == 0:
        raise ValueError("train_nids must be a non-empty 1-D tensor of node IDs (or a mask)")
    if int(train_nids.min()) < 0 or int(train_nids.max()) >= g.num_nodes():
        raise ValueError(f"train_nids must lie in [0, {g.num_nodes()})")
    if torch.unique(train_nids).numel() != train_nids.numel():
        raise ValueError("train_nids contains duplicate node IDs")
    return train_nids.to(device=g.device, dtype=torch.int64)


def _pool_size(
    num_train: int, batch_size: int, checkpoint_every: int, pool_ratio: float | None
) -> int:
    """Checkpoint pool size: ``gamma |train|``, by default as many nodes as an interval draws."""
    if pool_ratio is None:
        # The paper's settings (Reddit, PPI, Yelp at batch 512, K = 20) all have pools of
        # 19-30 batches.
        return min(num_train, checkpoint_every * batch_size)
    if not 0.0 < pool_ratio <= 1.0:
        raise ValueError(f"pool_ratio (gamma) must be in (0, 1], got {pool_ratio}")
    return math.ceil(pool_ratio * num_train)


def _check_keys(g: DGLGraph, node_feats, labels, edge_feats, edge_weight: str | None) -> None:
    """Fail at construction, not in a worker process, when a named feature is missing."""
    for what, names, data in (
        ("prefetch_node_feats", node_feats, g.ndata),
        ("prefetch_labels", labels, g.ndata),
        ("prefetch_edge_feats", edge_feats, g.edata),
    ):
        missing = [name for name in names or [] if name not in data]
        if missing:
            raise KeyError(
                f"{what} names {missing}, which the graph does not have (it has "
                f"{list(data.keys())})"
            )
    check_edge_weight(g, edge_weight)


class MVSSampler(BlockSampler):
    """Minimal Variance Sampling (MVS-GNN) as a DGL block sampler.

    **What the DataLoader's indices mean.** As with :class:`dgl.dataloading.SAINTSampler`, the
    indices are *step numbers*, not nodes: the sampler owns its candidate set (``train_nids``)
    and draws each step's seeds itself, deterministically from ``(seed, epoch, step)``, so
    worker processes and ``use_ddp=True`` ranks agree without coordination.  Build the loader with
    ``sampler.step_ids()`` as indices, the DataLoader's ``batch_size=1`` (the default; the MVS
    batch size is this sampler's ``batch_size``) and ``shuffle=False`` (draws are already
    random; shuffled steps are refused).  An epoch is ``steps_per_epoch`` steps, by default
    ``ceil(len(train_nids) / batch_size)``; call :meth:`set_epoch` at the start of each epoch.
    To evaluate, use :meth:`evaluation_sampler` in DGL's DataLoader over the nodes.

    **Seeds.** Each step draws ``batch_size`` training nodes (systematic sampling, exactly
    that many) with the minimal-variance probabilities ``p_i = min(1, g_i / mu)``
    (:func:`dgl_mvs.probabilities.mvs_probabilities`) of their scores ``g_i``, mixed with a
    share ``a`` of uniform ones, and weights them by ``1 / (p_i |train|)`` in
    ``blocks[-1].dstdata["mvs_weight"]``, so that ``sum_i w_i loss_i`` is an unbiased estimate
    of the mean training loss.  ``p`` is fixed for ``interval`` steps (about a tenth of the
    training set's worth of seeds), then recomputed from the score table.  With ``a = 1``
    the seeds are uniform: each epoch then takes the training nodes in a random order, every
    node once (as DGL's DataLoader with ``shuffle=True``), with weights ``1 / batch_size``.

    **Seeds that pay, or step aside** (one-hop blocks, :mod:`dgl_mvs.seeds`).  Importance
    sampling whose gradient variance is ``r`` times that of uniform seeds is worth a batch
    ``1 / r`` times larger; it costs score refreshes and bookkeeping, a share ``c`` of a step.
    With ``importance="auto"`` (the default) the seeds are importance-sampled only while
    ``1 / r > 1 + c``, and uniform otherwise.  ``r`` is measured for free at the end of every
    interval from the fresh scores that :meth:`update_scores` receives: the closed-form
    variance that the probabilities from the score table (with each candidate share ``a``:
    0.1, 0.25, 0.5, 1) have on them, against uniform seeds, over the steps since the last
    score refresh; the best share is used.  ``c`` is by default a model (so that every run
    of a seed makes the same choices); ``overhead=`` sets it, or measures it
    (``"measured"``).  :meth:`seed_report` says what was chosen and why.

    **Scores.** :meth:`update_scores` writes each step's closed-form gradient norms (e.g.
    :func:`dgl_mvs.cross_entropy_grad_norm`); :meth:`refresh_scores` scores every training
    node at the current weights, forward only: scores that each node got at its own last
    training step drift apart, refreshed ones do not (the README's variance measurements
    compare them).  The same fresh rows that measure ``r`` tell what scores refreshed now
    would give: a refresh runs when the variance lost to stale scores since the last one adds
    up to the refresh's own cost (in training steps, by the row model), within a budget of
    one refresh per ``score_every`` steps; the first comes as soon as the fresh scores differ
    enough from the table's to pay for it, so importance sampling can start in the first
    epoch.
    The score table lives in ``g.ndata["mvs_score"]`` in shared memory, so DataLoader
    workers read what the training process writes.

    **Several processes (DDP).**  Built after ``torch.distributed.init_process_group``, the
    sampler behaves like one sampler across the job.  With ``R`` ranks and
    ``DataLoader(..., use_ddp=True)``, every rank runs the epoch's steps ``0, 1, ...`` in
    lockstep (``steps_per_epoch / R`` of them) and at each step all ranks draw the *same* global
    sample of ``R * batch_size`` seeds, from the same probabilities (scores for ``R *
    batch_size``) with generators seeded without the rank; each rank keeps a disjoint random
    share of ``batch_size`` seeds.  The union of the ranks' seeds is exactly the sample of one
    sampler with batch size ``R * batch_size`` (same inclusion probabilities, same seeds).  The
    weights are that sample's ``1 / (p_i |train|)`` times ``R``: DDP averages the ranks'
    gradients, and the average of the ranks' weighted losses is then the single sampler's
    unbiased estimate.  :meth:`update_scores` exchanges the ranks' score rows (one
    ``all_gather`` of ``B`` node IDs and scores per rank and step on a gloo group of the
    sampler's own) and writes all of them, so the score tables, and the probabilities
    computed from them, stay identical on every rank; a score refresh splits the training
    nodes among the ranks and exchanges their rows the same way.  :meth:`update_scores` and
    :meth:`refresh_scores` are collectives then: call them on every rank; so is the
    construction, which checks that every rank passed the same arguments (ValueError naming
    the ones that differ) and gives the ranks built without ``seed=`` rank 0's seed.  A rank
    that waits longer than ``ddp_timeout`` for the others (one skipped :meth:`update_scores`,
    or stopped) raises :class:`dgl_mvs.distributed.ExchangeError` naming the cause; a rank
    that skipped :meth:`update_scores` says so when it draws its next step (with DataLoader
    workers, its worker waiting for what that call publishes raises once the training process
    has stayed out of :meth:`update_scores` for ``DDP_WORKER_IDLE`` = 40 s, unless
    ``score_timeout`` was given).  Histories
    (:class:`dgl_mvs.History`) are exchanged after each step (:meth:`dgl_mvs.History.sync`);
    one-hop control-variate snapshots are recomputed from the (identical) weights on every
    rank.  Ranks whose global draws differ anyway are refused with a RuntimeError at the
    exchange.  Each rank saves and resumes its own :meth:`state_dict`.

    **Reproducible with DataLoader workers.**  A run is a function of its seed: the same
    batches, weights and blocks with ``num_workers=0`` or any number of workers, and after a
    resume.  Workers draw ahead of training, so everything a step's draw and blocks read
    that training changes is fixed as of the end of a defined earlier step and published by
    the training process: the probabilities of interval ``k`` (one-hop blocks) from the
    scores as of the end of its step before (after that step's scores and any score
    refresh, which thus takes effect at the next interval); with ``probabilities="step"``
    the scores as of the step before; the one-hop control-variate snapshot, refreshed on a
    fixed schedule of steps; the history schedules' probabilities, fixed at their checkpoint
    step.  A worker that gets to a step before what it reads is published waits for it (at
    those boundaries only; up to ``score_timeout``).

    **Blocks.** By default :class:`dgl_mvs.OneHopSampler`'s: the first layer reads each
    node's precomputed aggregation of the raw features, the last layer reads the batch's full
    in-neighbourhood (exact: the batch's outputs and gradients are the full-graph ones) or,
    above a mean degree of 40, uses control variates.  The model is given as ``model=`` (its
    layers in ``model.layers``, as in DGL's examples).  ``block_sampler="history"`` /
    ``"cv"`` / ``"exact"`` select the paper's Algorithm 1 instead: every
    ``checkpoint_every`` (``K``) steps a checkpoint step returns exact blocks for a uniform
    pool ``V_S`` of ``gamma |train|`` nodes (its forward refreshes histories, its gradient
    norms score the pool) and the ``K - 1`` steps after it draw from ``V_S`` with weights
    ``1 / (p_i |V_S|)``; those blocks need a :class:`dgl_mvs.History` attached to the model.
    A DGL block sampler (``NeighborSampler([10, 10])``) keeps DGL's blocks and only draws the
    seeds by importance.

    **The way through.**  DGL's DataLoader calls :meth:`sample_blocks` with one step index:
    the step schedule (:attr:`schedule`, a :class:`dgl_mvs.schedule.StepSchedule`) turns it
    into a global step, the step's seeds and weights are drawn, and the block sampler chosen
    at construction builds the blocks (:attr:`block_sampler`, or the exact
    :class:`dgl_mvs.ExactSampler` at a checkpoint step).

    Parameters
    ----------
    g : DGLGraph
        The graph (homogeneous).  The score table is attached to its ``ndata``.
    train_nids : Tensor
        Candidate seed nodes (the training set): integer IDs or a boolean mask.
    batch_size : int
        Seeds per step (exact for ``draw="systematic"``, the mean for ``"poisson"``).
    num_layers : int, optional
        Number of GNN layers, for ``block_sampler`` "history" and "exact" (read from ``model``
        otherwise).
    model : nn.Module, optional
        The GNN, called as ``model(blocks, x)``, with its layers in ``model.layers``.  Required
        by the default blocks (which read how each layer aggregates) and by score refreshes.
    block_sampler : str or BlockSampler, optional
        How the blocks are built.  Default: ``"onehop"`` where the model's layers allow it,
        else (attention, e.g. ``GATConv``; SAGE-pool/LSTM) DGL's ``NeighborSampler([10] * L)``
        blocks with MVS seeds, with a warning that says so.  ``"onehop"`` (see above,
        :class:`dgl_mvs.OneHopSampler`),
        ``"history"`` (Eq. 7, :class:`dgl_mvs.HistorySampler`), ``"cv"`` (VR-GCN control
        variates with ``fanouts``, :class:`dgl_mvs.ControlVariateSampler`), ``"exact"``
        (:class:`dgl_mvs.ExactSampler`), or a block sampler object: a
        :class:`dgl_mvs.OneHopSampler`, or any DGL block sampler (also used at checkpoint
        steps).
    fanouts : list[int], optional
        One-hop blocks: per layer, ``-1`` exact or ``s`` control variates with ``s`` sampled
        neighbours (default: the cost rule of :func:`dgl_mvs.onehop.default_fanouts`).
        ``block_sampler="cv"``: neighbours sampled per layer.
    checkpoint_every : int, optional
        ``K`` of the history schedules (default 3); not used by one-hop blocks.  (Unrelated to
        :func:`dgl_mvs.save_checkpoint`, which writes a run to disk.)
    pool_ratio : float, optional
        ``gamma`` of the history schedules: pool size as a fraction of ``train_nids`` (default:
        ``K`` batches).
    probabilities : str, default "frozen"
        ``"frozen"`` (fixed per interval) or ``"step"`` (recomputed every step, ``O(|train|)``).
    draw : str, default "systematic"
        ``"systematic"`` or ``"poisson"`` (independent Bernoulli draws, the paper's).
    uniform_mix : float, optional
        A fixed uniform share ``a`` in ``(1 - a) p + a B / n`` (1: uniform seeds).  Default:
        chosen at the end of every interval from the fresh scores with one-hop blocks (at
        each score refresh with ``probabilities="step"``), 0 with the history schedules.
    importance : str, optional
        One-hop blocks with ``probabilities="frozen"``: ``"auto"`` (default): importance-
        sampled seeds only while they pay for their cost (see "Seeds that pay, or step
        aside"), uniform seeds otherwise; ``"always"``: whenever a share of the scores beats
        uniform seeds on fresh scores, whatever the cost.  With a fixed ``uniform_mix`` the
        choice is between that share and uniform seeds.
    overhead : float or str, optional
        The cost share ``c`` of a training step that ``importance="auto"`` weighs the
        seeds' gain against.  Default: the model of :mod:`dgl_mvs.seeds` (the regular
        refreshes by their row count, plus 2 % for the draw and the scores), the same in
        every run; a number, e.g. ``0.05``; or ``"measured"``: the sampler's own work timed
        in the training process (runs then depend on the machine's speed and load).
    edge_weight : str, optional
        ``g.edata`` key of full-graph edge weights, put in ``block.edata["edge_weights"]``.
    steps_per_epoch : int, optional
        Steps per epoch (default ``ceil(len(train_nids) / batch_size)``).
    seed : int, optional
        Seed of all draws.  Default: drawn from DGL's global generator at construction
        (:func:`default_seed`), so that ``dgl.seed(s)`` before building the sampler fixes its
        draws, as it fixes those of DGL's own samplers (and without ``dgl.seed`` each run
        differs, as theirs do); under ``torch.distributed`` rank 0's, and after
        :meth:`load_state_dict` the saved run's.
    score_timeout : float, optional
        Seconds a DataLoader worker waits for what the training process publishes in
        :meth:`update_scores` (see "Reproducible with DataLoader workers") before raising an
        error that says so (default 600: a skipped :meth:`update_scores` at a boundary step).
        ``0``: workers do not wait but draw from the score table as it is (the run then
        depends on their timing; :meth:`update_scores` warns).
    score_every : int, optional
        The refresh budget: at most one score refresh per ``score_every`` steps on average,
        one in advance (default: about 3 % of the training time by the row model, a whole
        number of intervals; 0 disables refreshes).  Within it, a refresh runs when the
        variance lost to stale scores adds up to its cost (see "Scores").
    multilabel : bool, default False
        Score refreshes use binary cross-entropy (mean over classes) instead of cross-entropy.
    ddp_timeout : float, default 30
        Under ``torch.distributed``: seconds a rank waits for the others in the sampler's
        collectives (construction, :meth:`update_scores`, :meth:`refresh_scores`) before
        raising.  DDP's backward pass keeps the ranks within a short skew of each other;
        raise it if one rank does long work alone between its backward pass and
        :meth:`update_scores`.
    prefetch_node_feats, prefetch_labels, prefetch_edge_feats, output_device
        As in :class:`dgl.dataloading.NeighborSampler`.  With one-hop blocks the node features
        arrive in ``blocks[0].srcdata`` already aggregated for the first layer.
    blocks : str or BlockSampler, optional
        Deprecated name of ``block_sampler``.

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
    >>> sampler = dgl_mvs.MVSSampler(g, torch.arange(200), batch_size=32, model=model,
    ...     prefetch_node_feats=["feat"], prefetch_labels=["label"])
    >>> loader = dgl.dataloading.DataLoader(g, sampler.step_ids(), sampler)
    >>> opt = torch.optim.Adam(model.parameters(), lr=0.01)
    >>> for epoch in range(2):
    ...     sampler.set_epoch(epoch)
    ...     for input_nodes, output_nodes, blocks in loader:
    ...         logits = model(blocks, blocks[0].srcdata["feat"])
    ...         labels = blocks[-1].dstdata["label"]
    ...         w = blocks[-1].dstdata["mvs_weight"]
    ...         loss = (w * F.cross_entropy(logits, labels, reduction="none")).sum()
    ...         opt.zero_grad(); loss.backward(); opt.step()
    ...         sampler.update_scores(blocks, dgl_mvs.cross_entropy_grad_norm(logits, labels))
    """

    def __init__(
        self,
        g: DGLGraph,
        train_nids: Tensor,
        batch_size: int,
        num_layers: int | None = None,
        *,
        model: object = None,
        block_sampler: str | BlockSampler | None = None,
        fanouts: Sequence[int] | None = None,
        checkpoint_every: int | None = None,
        pool_ratio: float | None = None,
        probabilities: str = "frozen",
        draw: str = "systematic",
        uniform_mix: float | None = None,
        edge_weight: str | None = None,
        steps_per_epoch: int | None = None,
        seed: int | None = None,
        score_timeout: float | None = None,
        score_every: int | None = None,
        multilabel: bool = False,
        ddp_timeout: float = DDP_TIMEOUT,
        importance: str | None = None,
        overhead: float | str | None = None,
        prefetch_node_feats: Sequence[str] | None = None,
        prefetch_labels: Sequence[str] | None = None,
        prefetch_edge_feats: Sequence[str] | None = None,
        output_device: torch.device | str | None = None,
        blocks: str | BlockSampler | None = None,
    ):
        if blocks is not None:
            warnings.warn(
                "MVSSampler(blocks=...) is renamed block_sampler=...; blocks= will be removed",
                DeprecationWarning, stacklevel=2,
            )
            block_sampler = blocks
        check_graph(g)
        self.train_nids = _train_ids(g, train_nids)
        num_train = self.train_nids.numel()
        batch_size = _positive_int("batch_size", batch_size)
        # The block kind becomes block sampler objects once, here: the step sampler and the
        # checkpoint sampler (exact blocks for a checkpoint's pool).
        choice = choose_block_samplers(
            block_sampler, g, model=model, num_layers=num_layers, fanouts=fanouts,
            edge_weight=edge_weight, prefetch_node_feats=prefetch_node_feats,
            prefetch_labels=prefetch_labels, output_device=output_device,
        )
        self.block_kind, self.block_sampler = choice.kind, choice.step
        self._checkpoint_sampler = choice.checkpoint
        onehop = self.block_kind == "onehop"
        if onehop:
            if checkpoint_every is not None or pool_ratio is not None:
                raise ValueError(
                    "one-hop blocks need no checkpoint steps: checkpoint_every (K) and "
                    "pool_ratio apply to block_sampler='history', 'cv' and 'exact'"
                )
        else:
            checkpoint_every = _positive_int(
                "checkpoint_every (K)", 3 if checkpoint_every is None else checkpoint_every
            )
        # The block sampler fills the first block's input features itself (aggregated).
        super().__init__(
            prefetch_node_feats=None if onehop else prefetch_node_feats,
            prefetch_labels=prefetch_labels,
            prefetch_edge_feats=prefetch_edge_feats,
            output_device=output_device,
        )
        # Under torch.distributed every step draws one global sample of world_size *
        # batch_size seeds, of which each rank keeps batch_size (see dgl_mvs.distributed).
        _, world_size = process_group_place()
        global_batch = batch_size * world_size
        if onehop:
            self.pool_size = num_train
            # p is recomputed from the score table once per interval of this many steps, so
            # that about a tenth of the training set has new scores each time.
            interval = max(1, math.ceil(num_train / (10 * global_batch)))
        else:
            self.pool_size = _pool_size(num_train, global_batch, checkpoint_every, pool_ratio)
            interval = checkpoint_every
        if global_batch > self.pool_size:
            # Every pool node is then drawn with probability 1: a full-pool batch.
            ranks = f" x {world_size} ranks" if world_size > 1 else ""
            warnings.warn(
                f"batch_size {batch_size}{ranks} exceeds the pool of {self.pool_size} nodes "
                f"(pool_ratio * |train|); every step takes the whole pool",
                RuntimeWarning, stacklevel=2,
            )
            global_batch = self.pool_size
            batch_size = math.ceil(global_batch / world_size)
        if probabilities not in ("frozen", "step"):
            raise ValueError(f"probabilities must be 'frozen' or 'step', got {probabilities!r}")
        if draw not in ("systematic", "poisson"):
            raise ValueError(f"draw must be 'systematic' or 'poisson', got {draw!r}")
        # None with one-hop blocks: chosen from fresh scores (see seeds, refresh_scores).
        self.adaptive_mix = uniform_mix is None and onehop
        if uniform_mix is None:
            uniform_mix = INITIAL_MIX if onehop else 0.0
        if isinstance(uniform_mix, bool) or not isinstance(uniform_mix, numbers.Real) \
                or not 0.0 <= uniform_mix <= 1.0:
            raise ValueError(f"uniform_mix must be a number in [0, 1], got {uniform_mix!r}")
        _check_keys(g, prefetch_node_feats, prefetch_labels, prefetch_edge_feats, edge_weight)
        if onehop and prefetch_edge_feats:
            raise ValueError(
                "one-hop blocks hold aggregated rows, not sampled edges, so edge features "
                f"cannot be prefetched (prefetch_edge_feats={list(prefetch_edge_feats)}): pass "
                "edge weights with edge_weight='w' (folded into the aggregates), or "
                "block_sampler=dgl.dataloading.NeighborSampler([10, 10]) for a model that "
                "reads edge features"
            )

        self._seed_given = seed is not None
        if self._seed_given:
            seed = _positive_int("seed", seed, minimum=0)
        self.schedule = StepSchedule.for_this_process(
            math.ceil(num_train / batch_size) if steps_per_epoch is None
            else _positive_int("steps_per_epoch", steps_per_epoch),
            interval, checkpoints=not onehop,
            seed=seed if self._seed_given else default_seed(),
        )
        self.batch_size = batch_size
        #: Seeds per step over all ranks (``batch_size`` with one process).
        self.global_batch_size = global_batch
        self.num_layers = choice.num_layers
        self.fanouts = list(choice.fanouts) if choice.fanouts else None
        self.g = g
        self.multilabel = bool(multilabel)
        self.label_key = list(prefetch_labels)[0] if prefetch_labels else "label"
        self.step_scores = True
        self._since_scores = 0
        self.input_feature = list(prefetch_node_feats)[0] if prefetch_node_feats else "feat"
        self.checkpoint_every = checkpoint_every
        self.model = model
        self.pool_ratio = pool_ratio
        self.probabilities = probabilities
        self.draw = draw
        # Shared memory: a refresh's choice reaches DataLoader workers.
        self._mix = torch.tensor([float(uniform_mix)], dtype=torch.float64).share_memory_()
        self._configured_mix = None if self.adaptive_mix else float(uniform_mix)
        self.edge_weight = edge_weight
        self.score_timeout = _timeout("score_timeout", score_timeout, allow_zero=True)
        self._idle_limit = score_timeout is None  # the DDP rule of DDP_WORKER_IDLE applies
        # Shared with workers: [inside update_scores, time.monotonic() when it last returned].
        self._activity = torch.tensor([0.0, time.monotonic()],
                                      dtype=torch.float64).share_memory_()
        self.ddp_timeout = _timeout("ddp_timeout", ddp_timeout)
        if score_every is not None and (
            isinstance(score_every, bool) or not isinstance(score_every, int) or score_every < 0
        ):
            raise ValueError(f"score_every must be a non-negative integer, got {score_every!r}")
        self.score_every = 0
        if onehop:
            self.score_every = (
                score_every if score_every is not None else self._default_score_every()
            )
            if self.score_every and not (isinstance(model, nn.Module) and not isinstance(
                    model, (nn.ModuleList, nn.Sequential))):
                raise ValueError(
                    "MVSSampler refreshes the scores of all training nodes with the model "
                    "itself (called as model(blocks, x)): pass model=model, not its layers, "
                    "or score_every=0 to use only the scores given to update_scores"
                )
        self.importance = _importance(importance, overhead, onehop and probabilities == "frozen")
        if overhead == "measured" and world_size > 1:
            raise ValueError(
                "overhead='measured' times each process's own work, which differs between "
                "the ranks, and their choices of seeds must agree: give the ranks one number "
                "(e.g. overhead=0.05), or leave overhead at its default (a model, the same "
                "on every rank)"
            )
        self._overhead_setting = overhead
        if self.adaptive_mix and self.score_every == 0:
            self.uniform_mix = FIXED_MIX
        self._check_labels()
        #: The choice between importance-sampled and uniform seeds (one-hop blocks, frozen
        #: probabilities; None otherwise), with the refresh schedule and the timings.
        self._switch = self._seed_switch(overhead) if self.importance else None

        # A table of its own, unwritten: a run does not inherit another sampler's scores on
        # this graph (nor do ranks forked from one process write one inherited table).
        self.scores = ScoreTable(g, key=keys.SCORE, fresh=True)
        # State that worker processes must see change: shared memory (CPU graphs).  What the
        # training process publishes for the workers: the probabilities of one interval
        # (_frozen_p of _frozen_interval), and the last step whose update_scores has finished.
        self._frozen_interval = torch.full((1,), -1, dtype=torch.int64)
        self._frozen_p = torch.zeros(self.pool_size, dtype=torch.float64)
        # The interval's uniform share (1: uniform seeds, whose p is not written).
        self._frozen_mix = torch.ones(1, dtype=torch.float64)
        self._through = torch.full((1,), -1, dtype=torch.int64)
        for shared in (self._frozen_interval, self._frozen_p, self._frozen_mix, self._through):
            shared.share_memory_()
        self._pool_cache: tuple[int, Tensor] | None = None
        self._draw_cache: _IntervalDraws | None = None
        # Per process: the epoch's order of the training nodes, (epoch, permutation).
        self._order_cache: tuple[int, Tensor] | None = None
        # Training process: node ID -> position in train_nids; the minimal-variance p of the
        # published interval without uniform share (the candidate whose r is measured).
        self._positions: tuple[Tensor, Tensor] | None = None
        self._candidate: tuple[int, Tensor | None, float] | None = None
        self._all_written = False
        self._views: dict | None = None
        self._warned: set[str] = set()
        self._last_updated_step = -1
        self._last_update_call = -1
        self._last_main_draw = -1
        self._fallback_interval = -1
        self._unscored_step = -1
        # Identifies this sampler's blocks in update_scores (copied into worker processes).
        self._token = int.from_bytes(os.urandom(7), "little")
        self._group = None
        if world_size > 1:  # one collective: the ranks' arguments must agree
            self._join_ranks()

    @property
    def _snapshot_period(self) -> int:
        """One-hop control variates: steps between snapshot refreshes (0: no snapshot)."""
        if self.block_kind != "onehop":
            return 0
        return self.block_sampler.refresh_period(self.global_batch_size)

    def _join_ranks(self) -> None:
        """Under torch.distributed: this sampler's process group, and one check that every
        rank built it with the same arguments (ranks without ``seed=`` take rank 0's seed)."""
        self._group = sampler_group(self.ddp_timeout)
        config = self._config()
        arguments = {name: config[name] for name in config if name not in ("rank", "seed")}
        arguments.update(
            train_nids=self.train_nids, num_nodes=self.g.num_nodes(),
            num_edges=self.g.num_edges(), label_key=self.label_key, multilabel=self.multilabel,
            input_feature=self.input_feature, interval=self.schedule.interval,
            seed_given=self._seed_given, seed_high=self.seed >> 32,
            seed_low=self.seed & 0xFFFFFFFF,
        )
        table = agree_on_arguments(arguments, self._group)
        names = list(arguments)
        given, high, low = (table[:, names.index(n)].long()
                            for n in ("seed_given", "seed_high", "seed_low"))
        seeds = torch.where(given.bool(), high * (1 << 32) + low, high[0] * (1 << 32) + low[0])
        checked = {n: arguments[n] for n in names[:-3]}
        problems = differing_arguments(checked, table[:, :len(checked)])
        if not bool((seeds == seeds[0]).all()):
            problems.append("seed (" + ", ".join(
                f"rank {r}: {int(v)}" for r, v in enumerate(seeds.tolist())) + ")")
        if problems:
            raise ValueError(
                "MVSSampler was built with different arguments on the ranks: "
                + "; ".join(problems) + ". Build it with the same arguments on every rank "
                "(the ranks draw one global sample per step and split it; train_nids is the "
                "whole training set on every rank)"
            )
        self.schedule.seed = int(seeds[0])

    def _check_labels(self) -> None:
        """What a score refresh reads must be there: the labels, 1-D or (multilabel) 2-D."""
        labels = self.g.ndata[self.label_key] if self.label_key in self.g.ndata else None
        if labels is None:
            if self.score_every:
                raise ValueError(
                    f"MVSSampler refreshes the scores of all training nodes every "
                    f"{self.score_every} steps from their labels, g.ndata[{self.label_key!r}], "
                    f"which this graph does not have (it has {list(self.g.ndata.keys())}): "
                    "name the label key with prefetch_labels=['your_key'] (the first one is "
                    "read), or pass score_every=0 to use only the scores given to "
                    "update_scores"
                )
            return
        if self.multilabel and labels.dim() != 2:
            raise ValueError(
                f"multilabel=True needs 2-D labels (nodes x classes), but "
                f"g.ndata[{self.label_key!r}] has shape {tuple(labels.shape)}: drop "
                "multilabel=True for class indices"
            )
        if not self.multilabel and labels.dim() != 1 and self.score_every:
            raise ValueError(
                f"g.ndata[{self.label_key!r}] has shape {tuple(labels.shape)}, multi-label "
                "targets, but score refreshes score class indices (cross-entropy): pass "
                "multilabel=True (binary cross-entropy, as "
                "F.binary_cross_entropy_with_logits)"
            )

    def __getstate__(self) -> dict:
        # DataLoader workers started by spawn/forkserver get a pickled copy; they never
        # exchange with other ranks, and a process group cannot be pickled.
        state = self.__dict__.copy()
        state["_group"] = None
        # NumPy views of shared tensors would pickle as copies: the worker builds its own.
        state["_views"] = None
        return state

    @property
    def has_checkpoints(self) -> bool:
        """Whether the schedule has checkpoint steps (the history block kinds)."""
        return self.schedule.checkpoints

    @property
    def steps_per_epoch(self) -> int:
        return self.schedule.steps_per_epoch

    @property
    def seed(self) -> int:
        return self.schedule.seed

    @property
    def rank(self) -> int:
        return self.schedule.rank

    @property
    def world_size(self) -> int:
        return self.schedule.world_size

    @property
    def uniform_mix(self) -> float:
        """Uniform share ``a`` of the probabilities, ``(1 - a) p_mvs + a B / n``."""
        return float(self._mix[0])

    @uniform_mix.setter
    def uniform_mix(self, value: float) -> None:
        self._mix[0] = float(value)

    def _refresh_rows(self) -> tuple[float, bool]:
        """(first-layer rows of a score refresh, whether it runs on the whole graph).

        The training nodes' blocks reach about ``|train| * rows_per_seed`` rows (at most the
        graph); one full-graph pass computes every node but skips building blocks, so it is
        used unless the training nodes reach less than two thirds of the graph.
        """
        n = float(self.g.num_nodes())
        reach = min(n, self.train_nids.numel() * self.block_sampler.rows_per_seed())
        # Layer-wise one-hop inference holds one layer's input for every node at a time;
        # a full-graph forward holds all of them, hence its bound.
        fits = self.block_kind == "onehop" or self.g.num_nodes() <= FULL_GRAPH_MAX_NODES
        full = fits and n <= 1.5 * reach
        return (n if full else reach), full

    def _refresh_cost_steps(self) -> float:
        """The row model's cost of one score refresh, in training steps.

        A refresh is a forward pass over :meth:`_refresh_rows`; a step trains on the rows
        its batch reaches, counted with the block sampler's rows per seed.  Per row, a
        refresh costs about as much as a training step (measured with one and two threads on
        synthetic-100k and the Debian graph: its full-graph passes do without the backward
        pass but not without their message passing over every edge).  Under
        torch.distributed the steps of all ranks count as one step of the global batch, so
        that the ranks choose as one sampler with that batch does.
        """
        per_seed = self.block_sampler.rows_per_seed()
        refresh_rows, _ = self._refresh_rows()
        return refresh_rows / (self.global_batch_size * per_seed)

    def _default_score_every(self) -> int:
        """Steps between score refreshes, so that refreshing costs :data:`REFRESH_SHARE`.

        By the row model (:meth:`_refresh_cost_steps`), rounded up to whole intervals (a
        refresh then ends an interval, and the next interval's probabilities read it).
        Where that makes refreshes rare (small training sets in large graphs, Cora's 140
        nodes), the measured ratio shows how stale the probabilities have become, and uniform
        seeds take over where they do worse.
        """
        steps = self._refresh_cost_steps() / REFRESH_SHARE
        interval = self.schedule.interval
        return max(1, math.ceil(steps / interval)) * interval

    def _overhead_model(self) -> float:
        """The modelled cost share of importance-sampled seeds (:mod:`dgl_mvs.seeds`)."""
        refresh = self._refresh_cost_steps() / self.score_every if self.score_every else 0.0
        return STEP_SHARE + refresh

    def _seed_switch(self, overhead) -> SeedSwitch:
        """The seed switch of one-hop blocks; sets the uniform share of the first interval."""
        if self.adaptive_mix:
            mixes = MIX_CHOICES if self.score_every else (FIXED_MIX,)
        else:
            mixes = (self._configured_mix,)
        # Uniform until measured, except "always" with one share (the share from the start).
        auto = self.importance == "auto" or self.adaptive_mix and self.score_every
        initial = INITIAL_MIX if auto else float(mixes[0])
        self.uniform_mix = initial
        return SeedSwitch(mixes, self.importance, overhead, self.score_every,
                          self.schedule.interval, self._refresh_cost_steps(),
                          self.global_batch_size, initial)

    def seed_report(self) -> SeedReport:
        """What importance sampling gains, what it costs, and what the sampler chose.

        ``print(sampler.seed_report())`` gives a readable summary: the seeds in use
        (importance-sampled or uniform) and why, the predicted variance ratio ``r`` of the
        best uniform share against uniform seeds on the latest fresh scores (the equivalent
        batch factor ``1 / r``), the cost share ``c`` it was weighed against (the model's,
        and the one measured in this process), and the score refresh schedule.  One-hop
        blocks with ``probabilities="frozen"`` only (the other settings do not switch).

        Examples
        --------
        >>> import dgl, torch
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
        ...         return self.layers[1](blocks[1], self.layers[0](blocks[0], x).relu())
        >>> sampler = dgl_mvs.MVSSampler(g, torch.arange(200), batch_size=32, model=SAGE(),
        ...     prefetch_node_feats=["feat"], prefetch_labels=["label"])
        >>> report = sampler.seed_report()
        >>> report.mode, report.uniform_mix  # uniform until fresh scores have measured r
        ('uniform', 1.0)
        >>> print(report)  # doctest: +ELLIPSIS
        seeds: uniform (importance='auto', uniform share 1) - uniform seeds until ...
        """
        if self._switch is None:
            raise ValueError(
                "seed_report() describes the choice between importance-sampled and uniform "
                "seeds, which one-hop blocks (the default) with probabilities='frozen' make; "
                f"this sampler has block_sampler={self.block_kind!r} and "
                f"probabilities={self.probabilities!r}: use "
                "dgl_mvs.diagnostics.gradient_variance(sampler, model) to measure its seeds"
            )
        return self._switch.report(self._overhead_model())

    # ------------------------------------------------------------------ schedule
    def step_ids(self) -> Tensor:
        """Indices for ``dgl.dataloading.DataLoader``: the step numbers of one epoch.

        After :meth:`load_state_dict` of a state saved mid-epoch, the remaining steps of that
        epoch only: build the DataLoader of the resumed epoch after loading (with
        ``use_ddp=True``, every rank must resume from its own state saved at the same step).
        """
        self._publish_for(self._first_step())
        return self.schedule.step_ids().to(self.train_nids.device)

    # ------------------------------------------------------------------ publication
    # DataLoader workers draw ahead of training, each when its turn comes.  So that a step's
    # draw and blocks do not depend on that timing, everything they read that training
    # changes is fixed as of the end of a defined earlier step and published by the training
    # process in shared memory; a worker that gets there first waits for it:
    #
    # * the probabilities of interval k (one-hop blocks): the scores as of the end of step
    #   k * interval - 1, after that step's scores and any score refresh;
    # * probabilities="step": the scores as of the end of the step before;
    # * the one-hop control-variate snapshot of step t: refreshed after the last step s < t
    #   with (s + 1) % period == 0 (OneHopSampler.snapshot_step);
    # * history schedules: an interval's probabilities, fixed at its checkpoint step.
    #
    # Workers wait at those boundaries only, and draws in the training process itself (no
    # workers) read the same values, so every run of a seed draws the same batches.

    def _first_step(self) -> int:
        """Global step of the current epoch's first remaining step."""
        return self.epoch * self.schedule.local_steps + self.schedule.start

    def _publishes_intervals(self) -> bool:
        """Whether the training process publishes each interval's ``p`` (one-hop blocks)."""
        return not self.has_checkpoints and self.probabilities == "frozen"

    def _view(self) -> dict:
        """NumPy views of the shared scalars (a tensor's element access costs far more).

        Built in each process on first use: forked workers inherit them with the memory they
        map, spawned ones get the tensors pickled and build their own.
        """
        views = self._views
        if views is None:
            views = self._views = {
                "frozen_interval": self._frozen_interval.numpy(),
                "frozen_mix": self._frozen_mix.numpy(), "through": self._through.numpy(),
                "activity": self._activity.numpy(),
            }
        return views

    def _publish_interval(self, interval: int) -> None:
        """Fix ``interval``'s uniform share and ``p`` from the score table as it is now.

        Uniform seeds (share 1) publish no ``p``.  Workers read what is published.
        """
        tick = time.perf_counter()
        cached = self._draw_cache
        if cached is not None and cached.interval == interval:  # a resumed interval keeps it
            mix, probs = cached.mix, cached.probs
        else:
            mix, probs = self._interval_choice(interval)
        view = self._view()
        view["frozen_interval"][0] = -2  # being written: a reader's re-check fails
        view["frozen_mix"][0] = mix
        if probs is not None:
            self._frozen_p.copy_(probs.cpu())
        view["frozen_interval"][0] = interval  # after p: workers poll the interval
        if self._switch is not None:
            self._switch.timed("publish_uniform" if probs is None else "publish_mvs",
                               time.perf_counter() - tick)

    def _interval_choice(self, interval: int) -> tuple[float, Tensor | None]:
        """The uniform share of ``interval`` and its ``p`` (None for uniform seeds).

        With the seed switch, also the minimal-variance ``p`` without uniform share: the
        candidate whose variance the interval's fresh scores measure, whichever seeds it draws.
        """
        mix, pool = self.uniform_mix, self._pool(interval)
        if self._switch is None:
            return mix, self._pool_probabilities(pool)
        # The pool is train_nids, checked at construction: the table's unchecked read.
        candidate = mvs_probabilities(self.scores._read(pool).double(), self.global_batch_size)
        self._candidate = (interval, candidate, mix)
        if mix >= 1.0:
            return 1.0, None
        return mix, mix_uniform(candidate, self.global_batch_size, mix)

    def _publish_for(self, step: int) -> None:
        """Publish what the draw of ``step`` reads, where update_scores has not already.

        Called at the end of update_scores for the next step, and by step_ids and set_epoch
        for the first step of an epoch (a run that stopped an epoch early, or a new one).
        """
        view = self._view()
        if self._publishes_intervals():
            interval = self.schedule.interval_of(step)
            if int(view["frozen_interval"][0]) != interval:
                self._publish_interval(interval)
        view["through"][0] = max(int(view["through"][0]), step - 1)
        if self._snapshot_period:
            self.block_sampler.mark_snapshot(step, self._snapshot_period)

    def _wait_for(self, ready, what: str, step: int, publisher: int):
        """``ready()`` once it is not None, waiting in a worker; a clear error after the timeout.

        ``what`` is published by the training process at the end of step ``publisher``.
        """
        value = ready()
        started = time.monotonic()
        deadline = started + self.score_timeout
        notice = started + WORKER_NOTICE
        idle = self.world_size > 1 and self._idle_limit
        while value is None:
            now = time.monotonic()
            busy, last = (float(v) for v in self._activity)
            if idle and not busy and now - max(started, last) > DDP_WORKER_IDLE:
                raise RuntimeError(
                    f"a DataLoader worker waited to draw step {step} for {what}, which the "
                    f"training process publishes in update_scores at step {publisher}, but "
                    f"that process has not called update_scores for {DDP_WORKER_IDLE:.0f} s: "
                    "under torch.distributed every rank must call "
                    "sampler.update_scores(blocks, scores) after every step (pass "
                    "score_timeout=... to allow longer pauses between steps)"
                )
            if now > deadline:
                raise RuntimeError(
                    f"a DataLoader worker waited {self.score_timeout:.0f} s to draw step {step} "
                    f"for {what}, which the training process publishes in update_scores at "
                    f"step {publisher}: call sampler.update_scores(blocks, scores) after every "
                    "step (DataLoader workers wait for it, so that draws do not depend on "
                    "their timing), or use num_workers=0"
                )
            if notice is not None and now > notice:
                notice = None
                warnings.warn(
                    f"dgl_mvs: a DataLoader worker has waited {WORKER_NOTICE:.0f} s to draw "
                    f"step {step} for {what}, published by update_scores at step "
                    f"{publisher}; it raises after {self.score_timeout:.0f} s",
                    RuntimeWarning, stacklevel=2,
                )
            time.sleep(0.001)
            value = ready()
        return value

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch; visible to (persistent) worker processes.

        Setting the epoch that a loaded state stopped in keeps its resume point; any other
        epoch starts at its first step.
        """
        epoch = _positive_int("epoch", epoch, minimum=0)
        if epoch > 0 and self._last_updated_step < (epoch - 1) * self.schedule.local_steps:
            self._warn_once(
                "no-updates",
                f"update_scores was not called during epoch {epoch - 1}: without scores MVS "
                "draws uniform seeds. Call sampler.update_scores(blocks, scores) after every "
                "step.",
            )
        self.schedule.set_epoch(epoch)
        self._publish_for(self._first_step())

    @property
    def epoch(self) -> int:
        return self.schedule.epoch

    def is_checkpoint_batch(self, blocks: Sequence) -> bool:
        """Whether ``blocks`` (from this sampler's DataLoader) are a checkpoint step's.

        A checkpoint step computes exact outputs for the whole pool.  Algorithm 1 as the
        authors ran it used it only to refresh histories and scores, without a parameter
        update: run that step's forward under ``torch.no_grad()``, call
        :meth:`update_scores`, and skip ``backward`` and ``optimizer.step()``.  Both ways are
        valid; skipping is cheaper.
        """
        return self.schedule.is_checkpoint(_batch_step(blocks))

    # ------------------------------------------------------------------ seeds
    def _pool(self, interval: int) -> Tensor:
        """The uniform pool ``V_S`` of checkpoint interval ``interval`` (deterministic)."""
        if not self.has_checkpoints:
            return self.train_nids
        cached = self._pool_cache
        if cached is not None and cached[0] == interval:
            return cached[1]
        gen = self.schedule.shared_generator(interval, 1)
        order = torch.randperm(self.train_nids.numel(), generator=gen)[: self.pool_size]
        pool = self.train_nids[order.to(self.train_nids.device)]
        self._pool_cache = (interval, pool)
        return pool

    def _pool_probabilities(self, pool: Tensor) -> Tensor:
        return mvs_probabilities(
            self.scores.read(pool).double(), self.global_batch_size,
            uniform_mix=self.uniform_mix,
        )

    def _read_frozen(self, interval: int) -> tuple[float, Tensor | None] | None:
        """``(uniform share, p)`` of ``interval`` if published (p None for uniform seeds)."""
        view = self._view()
        if int(view["frozen_interval"][0]) != interval:
            return None
        mix = float(view["frozen_mix"][0])
        uniform = mix >= 1.0 and not self.has_checkpoints
        probs = None if uniform else self._frozen_p.clone()
        # Re-check: the main process may have published another interval meanwhile.
        return (mix, probs) if int(view["frozen_interval"][0]) == interval else None

    def _frozen_draws(self, interval: int, pool: Tensor,
                      step: int | None = None) -> _IntervalDraws:
        """The interval's frozen draws: its share, ``p``, a prepared drawer and the weights.

        Preparing happens once per interval and process, so that a step costs a few tensor
        operations (one-hop blocks: one offset and one ``searchsorted`` on the epoch's order;
        the history schedules: ``O(chunks + B log |V_S|)``).
        """
        cached = self._draw_cache
        if cached is not None and cached.interval == interval:
            return cached
        mix, probs, frozen = self._interval_probabilities(interval, pool, step)
        draws = self._prepare_draws(interval, mix, probs, pool)
        if frozen:  # a fallback from the live table may still be replaced: do not cache it
            self._draw_cache = draws
        return draws

    def _prepare_draws(self, interval: int, mix: float, probs: Tensor | None,
                       pool: Tensor) -> _IntervalDraws:
        if probs is None:
            return _IntervalDraws(interval, 1.0, None, None, None)
        drawer = None
        if self.draw == "systematic" and self.has_checkpoints:
            drawer = SystematicDraws(probs, self.schedule.shared_generator(interval, 4))
        elif self.draw == "systematic":
            # The epoch's order of the training nodes lays out the units: any order drawn
            # independently of p keeps the marginals exact (see SystematicDraws).
            epoch = self.schedule.epoch_of(interval * self.schedule.interval)
            drawer = SystematicDraws(probs, order=self._epoch_order(epoch), num_chunks=1)
        weights = 1.0 / (probs * float(pool.numel()))
        return _IntervalDraws(interval, mix, probs, drawer, weights)

    def _epoch_order(self, epoch: int) -> Tensor:
        """A random order of the training nodes' positions for ``epoch`` (shared by ranks)."""
        cached = self._order_cache
        if cached is not None and cached[0] == epoch:
            return cached[1]
        gen = self.schedule.shared_generator(epoch, _EPOCH_ORDER_STREAM)
        order = torch.randperm(self.pool_size, generator=gen).to(self.train_nids.device)
        self._order_cache = (epoch, order)
        return order

    def _interval_probabilities(self, interval: int, pool: Tensor, step: int | None = None
                                ) -> tuple[float, Tensor | None, bool]:
        """``(share, p, published)`` of ``interval`` (see "publication"); p None: uniform seeds.

        The history schedules publish it at the interval's checkpoint step, one-hop blocks at
        the end of the interval before.  Drawing in the training process (no workers), the
        publication has happened unless update_scores was skipped: one-hop blocks then fix
        ``p`` now, the history schedules draw from the table as it is.  A worker waits for it,
        or with ``score_timeout=0`` draws from the table as it is (reported by update_scores).
        """
        first = interval * self.schedule.interval
        publisher = first if self.has_checkpoints else first - 1
        frozen = self._read_frozen(interval)
        if frozen is None and _in_main_thread_of_main_process():
            if not self.has_checkpoints:
                self._publish_interval(interval)
                frozen = self._read_frozen(interval)
        elif frozen is None and self.score_timeout > 0:
            frozen = self._wait_for(lambda: self._read_frozen(interval),
                                    f"the probabilities of interval {interval}",
                                    first if step is None else step, publisher)
        if frozen is not None:
            mix, probs = frozen
            return mix, None if probs is None else probs.to(self.train_nids.device), True
        self._fallback_interval = interval
        if self.uniform_mix >= 1.0 and not self.has_checkpoints:
            return 1.0, None, False
        return self.uniform_mix, self._pool_probabilities(pool), False

    def _step_probabilities(self, step: int, pool: Tensor) -> Tensor:
        """``probabilities="step"``: ``p`` from the scores as of the end of the step before."""
        if not _in_main_thread_of_main_process():
            if self.score_timeout > 0:
                through = self._view()["through"]
                self._wait_for(lambda: True if int(through[0]) >= step - 1 else None,
                               "the scores of the step before", step, step - 1)
            elif int(self._view()["through"][0]) < step - 1:
                self._unscored_step = step
        return self._pool_probabilities(pool)

    # ------------------------------------------------------------------ sampling
    def sample_blocks(self, g: DGLGraph, indices: Tensor, exclude_eids=None):
        """Draw the seeds of the step in ``indices`` and build its blocks."""
        indices = torch.as_tensor(indices).reshape(-1)
        if indices.numel() != 1:
            raise ValueError(
                f"MVSSampler got {indices.numel()} indices in one batch: its DataLoader indices "
                "are step numbers, one per batch. Use DataLoader(g, sampler.step_ids(), "
                "sampler) with the default batch_size=1; the MVS batch size is the sampler's "
                "batch_size. To evaluate or predict on given nodes, use "
                "DataLoader(g, nodes, sampler.evaluation_sampler(), batch_size=...)."
            )
        step = self.schedule.global_step(int(indices[0]))
        self.schedule.check_order(step)
        self._check_histories()
        if _in_main_thread_of_main_process():
            self._check_previous_step_scored(step)
        elif self._snapshot_period:
            self._wait_for_snapshot(step)
        seeds, weights = self._draw_step(step)
        draw = None
        if self.world_size > 1:
            seeds, weights, draw = self._rank_share(step, seeds, weights)
        checkpoint = self.schedule.is_checkpoint(step)
        input_nodes, output_nodes, blocks = sample_blocks_with(
            self._checkpoint_sampler if checkpoint else self.block_sampler,
            g, seeds.to(g.idtype), exclude_eids, self.schedule.generator(step, 3),
        )
        last = blocks[-1]
        if last.num_dst_nodes() != seeds.numel():
            raise RuntimeError("the block sampler changed the output nodes of the batch")
        last.dstdata[keys.WEIGHT] = weights.to(device=last.device, dtype=torch.float32)
        last.dstdata[keys.STEP] = torch.full(
            (seeds.numel(),), step, dtype=torch.int64, device=last.device
        )
        # Which sampler drew these blocks, and whether their interval's scores were there.
        last.dstdata[keys.SAMPLER] = torch.full(
            (seeds.numel(),), self._token, dtype=torch.int64, device=last.device
        )
        if draw is not None:  # [size, fingerprint] of the global draw, checked by update_scores
            last.dstdata[keys.DRAW] = torch.tensor([draw], dtype=torch.int64).repeat(
                seeds.numel(), 1).to(last.device)
        if not checkpoint and (self._unscored_step == step or self.probabilities == "frozen"
                               and self._fallback_interval == self.schedule.interval_of(step)):
            last.dstdata[keys.UNSCORED] = torch.ones(
                seeds.numel(), dtype=torch.bool, device=last.device
            )
        if self.output_device is not None:
            blocks = [block.to(self.output_device) for block in blocks]
            input_nodes = input_nodes.to(self.output_device)
            output_nodes = output_nodes.to(self.output_device)
        return input_nodes, output_nodes, blocks

    def _check_previous_step_scored(self, step: int) -> None:
        """Under DDP, refuse to draw ``step`` in the training process when this rank skipped
        update_scores for the step before it in the same pass over the loader: the other ranks
        wait for its scores, and would otherwise hang until their exchange times out."""
        last_drawn, self._last_main_draw = self._last_main_draw, step
        if self.world_size > 1 and last_drawn == step - 1 \
                and self._last_updated_step < step - 1:
            raise RuntimeError(
                f"rank {self.rank} is drawing step {step}, but update_scores was not called for "
                f"step {step - 1}: under torch.distributed every rank must call "
                "sampler.update_scores(blocks, scores) after every step (the ranks exchange "
                "their scores there; the other ranks wait for this one's)"
            )

    def _wait_for_snapshot(self, step: int) -> None:
        """A worker's wait for the control-variate snapshot that ``step`` reads.

        The training process refreshes it (in place, in shared memory) in update_scores after
        every step ``s`` with ``(s + 1) % period == 0`` and then publishes ``s``; step ``t`` reads
        the snapshot of the last such ``s < t``.  No later refresh can overwrite it while this
        worker builds ``t``'s blocks: the next one follows update_scores of a step ``>= t``,
        which the training process can only reach once it has received this worker's batch.
        """
        hop = self.block_sampler
        due = hop.snapshot_step(step, self._snapshot_period)
        if self.score_timeout == 0:  # asked not to wait: the snapshot as it is
            return
        self._wait_for(lambda: True if hop.published_snapshot >= due else None,
                       "the control-variate snapshot", step, due)

    def _needs_history(self) -> bool:
        """Whether the blocks fill the nodes outside the batch from a History."""
        return self.block_kind in ("history", "cv")

    def _check_histories(self) -> None:
        """History blocks need a History attached to the model, with as many layers."""
        if not self._needs_history():
            return
        for history in attached_histories(self.g):
            if history.num_layers != self.num_layers:
                raise ValueError(
                    f"MVSSampler builds {self.num_layers} blocks but the History attached to "
                    f"this graph's model has {history.num_layers} layers (widths "
                    f"{history.widths}): give the sampler num_layers={history.num_layers}"
                )

    def evaluation_sampler(self) -> BlockSampler:
        """A block sampler for evaluation or prediction on given nodes, DGL's way.

        Use it with DGL's DataLoader over the nodes to evaluate
        (``DataLoader(g, val_nids, sampler.evaluation_sampler(), batch_size=4096)``): the
        one-hop blocks of this sampler (exact, or control variates where it uses them) with
        the same prefetched features, or full neighbourhoods
        (``MultiLayerFullNeighborSampler``) for the other block kinds.
        """
        if self.block_kind == "onehop":
            return self.block_sampler
        if self.num_layers is None:
            raise ValueError(
                f"evaluation_sampler() builds full-neighbourhood blocks, one per layer, but "
                f"the number of layers is unknown: the {type(self.block_sampler).__name__} "
                "passed as block_sampler does not say it. Build MVSSampler with "
                "num_layers=L (or model=model, its layers in model.layers)"
            )
        return dgl.dataloading.MultiLayerFullNeighborSampler(
            self.num_layers, prefetch_node_feats=self.prefetch_node_feats,
            prefetch_labels=self.prefetch_labels,
        )

    def update_aggregates(self) -> None:
        """Recompute the one-hop blocks' precomputed first-layer aggregates.

        Call it in the training process after changing input features, edges or edge
        weights, before iterating a DataLoader with worker processes (see
        :meth:`dgl_mvs.OneHopSampler.update_aggregates`).
        """
        if not isinstance(self.block_sampler, OneHopSampler):
            raise ValueError(
                f"block_sampler={self.block_kind!r} precomputes no aggregates: only one-hop "
                "blocks (the default) do, and they are the ones update_aggregates recomputes"
            )
        self.block_sampler.update_aggregates()

    def _draw_step(self, step: int) -> tuple[Tensor, Tensor]:
        """Seeds and Horvitz-Thompson weights of global step ``step``."""
        interval = self.schedule.interval_of(step)
        pool = self._pool(interval)
        if self.schedule.is_checkpoint(step):
            weights = torch.full((pool.numel(),), 1.0 / pool.numel(), dtype=torch.float64)
            return pool, weights
        timed = self._switch is not None and _in_main_thread_of_main_process()
        tick = time.perf_counter() if timed else 0.0
        draws = None
        if self.probabilities == "frozen":
            draws = self._frozen_draws(interval, pool, step)
            if draws.probs is None:
                seeds, weights = self._uniform_draw(step, pool)
                if timed:
                    self._switch.timed("draw_uniform", time.perf_counter() - tick)
                return seeds, weights
            probs, drawer = draws.probs, draws.drawer
        else:
            probs, drawer = self._step_probabilities(step, pool), None
        gen = self.schedule.shared_generator(step, 2)
        for _ in range(100):
            if drawer is not None:  # one-hop blocks: any order of the seeds will do
                picked = drawer.draw(gen, sort=self.has_checkpoints)
            elif self.draw == "systematic":
                picked = systematic_draw(probs, gen)
            else:
                picked = poisson_draw(probs, gen)
            # A Poisson draw can come out empty (or leave a rank without seeds): draw again.
            if picked.numel() >= self.world_size:
                break
        else:
            raise RuntimeError("100 Poisson draws came out empty; are the probabilities tiny?")
        picked = picked.to(pool.device)
        if draws is not None:
            weights = draws.weights[picked]
        else:
            weights = horvitz_thompson_weights(probs[picked.cpu()], pool.numel())
        if timed:
            self._switch.timed("draw_mvs", time.perf_counter() - tick)
        return pool[picked], weights

    def _uniform_draw(self, step: int, pool: Tensor) -> tuple[Tensor, Tensor]:
        """Uniform seeds of ``step``: the next slice of the epoch's order, weights ``1 / B``.

        Every node is drawn with probability ``B / |pool|`` at every step (a uniformly random
        order puts each node at each position with the same chance), and once per epoch, as
        with ``DataLoader(..., shuffle=True)``; a step that reaches the end of the order
        continues at its start.
        """
        epoch, position = divmod(step, self.schedule.local_steps)
        order = self._epoch_order(epoch)
        n, size = pool.numel(), self.global_batch_size
        start = position * size % n
        if start + size <= n:
            picked = order[start:start + size]
        else:
            picked = torch.cat([order[start:], order[:start + size - n]])
        return pool[picked], torch.full((size,), 1.0 / size, dtype=torch.float64,
                                        device=pool.device)

    def _rank_share(self, step: int, seeds: Tensor,
                    weights: Tensor) -> tuple[Tensor, Tensor, tuple[int, int]]:
        """This rank's share of the global draw of ``step``, its weights times ``world_size``.

        Every rank drew the same ``seeds`` (generators without the rank); a permutation from
        a shared generator splits them into ``world_size`` disjoint shares.  DDP averages the
        ranks' gradients, so the weights are multiplied by ``world_size``: the average of the
        ranks' weighted losses is then the single sampler's Horvitz-Thompson estimate.
        Returns the share's seeds and weights, and ``(size, fingerprint)`` of the global draw.
        """
        mine = rank_share(seeds.numel(), self.world_size, self.rank,
                          self.schedule.shared_generator(step, 6)).to(seeds.device)
        draw = (seeds.numel(), draw_fingerprint(seeds))
        return seeds[mine], weights[mine.to(weights.device)] * self.world_size, draw

    def current_probabilities(self) -> Tensor:
        """Probabilities of every training node under the score table as it is now."""
        return mvs_probabilities(
            self.scores.read(self.train_nids).double(),
            min(self.global_batch_size, self.pool_size), uniform_mix=self.uniform_mix,
        )

    def blocks_for(
        self, seeds: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, list]:
        """Blocks of this sampler's kind for ``seeds``, outside the schedule (diagnostics).

        Input features are set only for one-hop blocks; for the other kinds index
        ``g.ndata`` with the returned input nodes.
        """
        seeds = seeds.to(device=self.g.device, dtype=self.g.idtype)
        return sample_blocks_with(self.block_sampler, self.g, seeds, None, generator)

    # ------------------------------------------------------------------ scores
    def update_scores(self, blocks: Sequence, scores: Tensor) -> None:
        """Write fresh scores of a step's output nodes; at checkpoints fix the next ``p``.

        Parameters
        ----------
        blocks : list of blocks
            The blocks of the step (as returned by the DataLoader).
        scores : Tensor
            One non-negative score per output node, e.g. from
            :func:`dgl_mvs.cross_entropy_grad_norm`.
        """
        tick = time.perf_counter()
        activity = self._view()["activity"]
        activity[0] = 1.0  # workers waiting for what this call publishes keep waiting
        try:
            step, refresh = self._update_scores(blocks, scores)
        finally:
            activity[1] = time.monotonic()
            activity[0] = 0.0
        if self._switch is not None:  # this call's own cost, and the step's
            self._switch.timed("update", time.perf_counter() - tick - refresh)
            self._switch.step_done(step)

    def _update_scores(self, blocks: Sequence, scores: Tensor) -> tuple[int, float]:
        """The work of update_scores; returns the step and the seconds of a score refresh."""
        step = _batch_step(blocks)
        self._check_blocks_are_current(blocks, step)
        if step == self._last_update_call:
            raise ValueError(
                f"update_scores was already called for step {step}: call it once per step, "
                "after the optimizer step (if a new epoch began, call sampler.set_epoch(epoch) "
                "first); nothing was changed"
            )
        nodes = blocks[-1].dstdata[NID].to(self.train_nids.device)
        if torch.is_tensor(scores):
            scores = scores.detach()
        if self.step_scores or not self.has_checkpoints and self.score_every == 0:
            scores = torch.as_tensor(scores).to(self.train_nids.device)
            if self.world_size > 1:  # every rank writes every rank's rows
                nodes, scores = self._exchange_step_scores(blocks, step, nodes, scores)
            self._write_step_scores(step, nodes, scores)
        if self.world_size > 1:  # and the histories that the step's forward pushed
            # The same order on every rank (the collectives must match).
            for history in sorted(attached_histories(self.g),
                                  key=lambda h: (h.num_layers, h.widths)):
                history.sync()
        if step < self._last_updated_step:
            self._warn_once(
                "repeat",
                f"step {step} was already trained on: call sampler.set_epoch(epoch) at the "
                "start of every epoch, otherwise every epoch repeats the same pools and draws",
            )
        self._last_updated_step = max(self._last_updated_step, step)
        self._last_update_call = step
        # What the next steps read, fixed now (see "publication"): the control-variate
        # snapshot, the scores (and a refresh of them), then the next interval's p.
        if self._snapshot_period:
            self.block_sampler.step_done(step, self._snapshot_period)
        refresh = 0.0
        if self._switch is not None:
            refresh = self._seeds_after_step(step)
        elif self.score_every and self.model is not None:
            self._since_scores += 1
            if self._since_scores >= self.score_every:
                tick = time.perf_counter()
                self.refresh_scores()
                refresh = time.perf_counter() - tick
        if self.schedule.is_checkpoint(step) and self.probabilities == "frozen":
            interval = self.schedule.interval_of(step)
            self._frozen_interval[0] = -2
            self._frozen_p.copy_(self._pool_probabilities(self._pool(interval)).cpu())
            # Publish the interval only once p is written: workers poll it.
            self._frozen_interval[0] = interval
        self._publish_for(step + 1)
        return step, refresh

    def _write_step_scores(self, step: int, nodes: Tensor, scores: Tensor) -> None:
        """Write a step's scores (checked); the seed switch keeps the rows that measure r."""
        if scores.dim() != 1 or scores.shape[0] != nodes.shape[0]:
            raise ValueError(
                f"update_scores needs one score per output node ({nodes.shape[0]}), got shape "
                f"{tuple(scores.shape)}; nothing was written"
            )
        values = scores.to(dtype=torch.float32)
        check_score_values(values)
        nodes = nodes.long()
        # The blocks are this sampler's (checked by their token): their nodes are in range.
        self.scores._store(nodes, values, mark=not self._all_written)
        candidate = self._candidate
        if self._switch is not None and candidate is not None and candidate[1] is not None \
                and candidate[0] == self.schedule.interval_of(step):
            self._switch.record(nodes, values)

    def _seeds_after_step(self, step: int) -> float:
        """At an interval's end: measure r, choose the next share; refresh scores when due.

        Returns the seconds of a score refresh (0 if none ran).
        """
        switch = self._switch
        if (step + 1) % self.schedule.interval == 0:
            steps = self._measure_interval(self.schedule.interval_of(step))
            if steps:
                self.uniform_mix = switch.decide(step, self._overhead_model())
            switch.add_shortfall(steps, self._overhead_model())
        if self.score_every and self.model is not None and switch.due():
            tick = time.perf_counter()
            self.refresh_scores()
            return time.perf_counter() - tick
        return 0.0

    def _measure_interval(self, interval: int) -> int:
        """Add ``interval``'s fresh rows to the estimate of r; the steps they came from."""
        switch, candidate = self._switch, self._candidate
        rows = switch.take_rows()
        if rows is None or candidate is None or candidate[0] != interval \
                or candidate[1] is None:
            return 0
        nodes, fresh, steps = rows
        q = candidate[1][self._positions_of(nodes)]
        uniform = min(1.0, self.global_batch_size / self.pool_size)
        mix = candidate[2]
        drawn_with = torch.full_like(q, uniform) if mix >= 1.0 else (1.0 - mix) * q + mix * uniform
        switch.add_interval(q, fresh, drawn_with, uniform, steps)
        return steps

    def _positions_of(self, nodes: Tensor) -> Tensor:
        """Positions in ``train_nids`` of training nodes (the sorted IDs searched: memory in
        the training set's size, not the graph's)."""
        if self._positions is None:
            self._positions = torch.sort(self.train_nids)
        ids, order = self._positions
        return order[torch.searchsorted(ids, nodes.to(ids.device))]

    def _exchange_step_scores(self, blocks: Sequence, step: int, nodes: Tensor,
                              scores: Tensor) -> tuple[Tensor, Tensor]:
        """All ranks' score rows of ``step`` (one ``all_gather``); checks the ranks' draws."""
        last = blocks[-1]
        if keys.DRAW not in last.dstdata:
            raise ValueError(
                "these blocks were drawn without torch.distributed, but the sampler runs on "
                f"{self.world_size} ranks: build the sampler after init_process_group"
            )
        size, fingerprint = (int(v) for v in last.dstdata[keys.DRAW][0])
        if scores.dim() != 1 or scores.numel() != nodes.numel():
            raise ValueError(
                f"update_scores needs one score per output node ({nodes.numel()}), got shape "
                f"{tuple(scores.shape)}"
            )
        # A fixed message size (the same on every rank whatever their draws): a Poisson
        # share larger than it goes in a second message.
        all_nodes, all_scores, tags = exchange_rows(
            nodes, scores, self.batch_size, tag=float(fingerprint), kind=1, step=step,
            group=self._group,
        )
        if not bool((tags == tags[0]).all()):
            raise RuntimeError(
                f"the ranks drew different global samples for step {step}: their score tables "
                "or probabilities differ. Every rank must build the sampler with the same "
                "arguments and call update_scores after every step; with DataLoader workers, "
                "use probabilities='frozen' (and score_timeout > 0 with the history "
                "schedules), or num_workers=0"
            )
        return all_nodes.to(nodes.device), all_scores

    def _check_blocks_are_current(self, blocks: Sequence, step: int) -> None:
        """Refuse blocks of another sampler or of another epoch; report unscored draws."""
        last = blocks[-1]
        token = last.dstdata.get(keys.SAMPLER) if keys.SAMPLER in last.dstdata else None
        if token is None or int(token[0]) != self._token:
            raise ValueError(
                "these blocks were drawn by another MVSSampler: give update_scores the blocks "
                "of this sampler's DataLoader"
            )
        epoch = self.schedule.epoch_of(step)
        if epoch != self.epoch:
            raise ValueError(
                f"these blocks are from epoch {epoch} (step {step}), the sampler is in epoch "
                f"{self.epoch}: update_scores takes the blocks of the current epoch only "
                "(scores of an old step would overwrite newer ones); nothing was changed"
            )
        if self._needs_history() and not attached_histories(self.g):
            raise ValueError(
                f"block_sampler={self.block_kind!r} fills the nodes outside the batch from "
                "history, but no dgl_mvs.History is attached to this graph's model: the halo "
                "rows held whatever the previous layer computed. Call "
                "dgl_mvs.History(g, widths).attach(model.layers) before training"
            )
        if keys.UNSCORED in last.dstdata:
            self._warn_once(
                "unscored",
                f"step {step} was drawn before the scores that fix its probabilities (those "
                f"of update_scores at step {self._publisher_of(step)}) were written, from the "
                "score table as it was: update_scores was skipped, or DataLoader workers drew "
                "ahead of training with score_timeout=0 (the run then depends on their "
                "timing). Call sampler.update_scores(blocks, scores) after every step, and "
                "leave score_timeout at its default (workers then wait for the scores).",
            )

    def _publisher_of(self, step: int) -> int:
        """The step at whose update_scores the probabilities of ``step`` are fixed."""
        if self.probabilities == "step":
            return step - 1
        first = step - step % self.schedule.interval
        return first if self.has_checkpoints else first - 1

    @torch.no_grad()
    def refresh_scores(self, model: nn.Module | None = None, chunk_size: int = 65536) -> None:
        """Score every training node at the current weights (forward only, dropout off).

        Runs the model on the whole graph (``model([g] * L, x)``, DGL's full-graph
        inference: the layers' own message passing, exact) when the graph is on the model's
        device, has at most ``FULL_GRAPH_MAX_NODES`` nodes and the training nodes reach most of
        it, otherwise on this sampler's blocks for the training nodes in chunks, and writes
        the closed-form gradient norm of each training node's loss (cross-entropy, or binary
        cross-entropy with ``multilabel=True``) to the score table.  Called by
        :meth:`update_scores` on its schedule (see "Scores").  Scores measured this way, all at
        once, keep the probabilities close to the optimal ones, where per-step scores (each
        node's last training forward) drift: see the README's variance measurements.
        """
        model = model if model is not None else self.model
        if model is None:
            raise ValueError("refresh_scores needs the model (MVSSampler(model=...))")
        labels = self.g.ndata[self.label_key]
        modules = [m for m in model.modules()]
        modes = [m.training for m in modules]
        model.eval()
        tick = time.perf_counter()
        # probabilities="step": the uniform share is chosen here, from the scores replaced.
        best_mix = self._switch is None and self.adaptive_mix
        had_scores = best_mix and bool(self.scores.written(self.train_nids).any())
        previous = self.scores.read(self.train_nids).double() if had_scores else None
        # Under torch.distributed each rank scores its share of the training nodes, then
        # the ranks exchange their rows: the tables stay identical.
        share = self.train_nids if self.world_size == 1 else \
            torch.tensor_split(self.train_nids, self.world_size)[self.rank]
        rows = []
        try:
            for out_nodes, logits in self._train_logits(model, chunk_size, share):
                y = labels[out_nodes.long()].to(logits.device)
                if self.multilabel:
                    values = bce_grad_norm(logits, y.to(logits.dtype))
                else:
                    values = cross_entropy_grad_norm(logits, y)
                out_nodes = out_nodes.to(self.train_nids.device).long()
                values = values.to(self.train_nids.device)
                if self.world_size == 1:
                    self.scores.write(out_nodes, values)
                else:
                    rows.append((out_nodes, values))
        finally:
            for m, mode in zip(modules, modes):
                m.train(mode)
        if self.world_size > 1:
            nodes = torch.cat([r[0] for r in rows]) if rows else share.new_zeros(0)
            values = torch.cat([r[1] for r in rows]) if rows else torch.zeros(0)
            # The first message has the size of a step's (a rank in another exchange then
            # reads its header instead of mismatched sizes); the rest follows in one more.
            all_nodes, all_values, _ = exchange_rows(
                nodes, values, self.batch_size, kind=2, step=self._last_updated_step,
                group=self._group,
            )
            self.scores.write(all_nodes.to(self.train_nids.device), all_values)
        self._all_written = True  # every training node has a score now
        if self._switch is not None:  # a new window of fresh scores; the next refresh planned
            self._switch.refreshed(self._last_updated_step)
            self._switch.timed("refresh", time.perf_counter() - tick)
        elif had_scores:
            self.uniform_mix = _best_mix(previous, self.scores.read(self.train_nids).double(),
                                         self.global_batch_size)
        self._since_scores = 0
        # The next interval's p reads the new scores (published at its first step - 1).

    def _train_logits(self, model: nn.Module, chunk_size: int, nodes: Tensor):
        """``(nodes, logits)`` for ``nodes``: one layer-wise pass, or chunks of blocks.

        One-hop blocks: layer-wise inference over the precomputed first layer
        (:meth:`dgl_mvs.OneHopSampler.logits`: every node's first layer from two rows each,
        then the last layer on ``nodes``' in-edges), unless the training nodes' own blocks
        reach fewer rows (:meth:`_refresh_rows`).  Other blocks: a full-graph forward
        (DGL's), or chunks of blocks on graphs too large for it.  The choice depends on the
        whole training set (the same on every rank).
        """
        g = self.g
        _, whole = self._refresh_rows()
        if whole and self.block_kind == "onehop":
            yield nodes, self.block_sampler.logits(model, nodes, chunk_size)
            return
        param = next(model.parameters(), None)
        device = param.device if param is not None else g.device
        if whole and g.device == device:
            with g.local_scope():
                if self.edge_weight is not None:  # the models read DGL's key
                    g.edata[keys.EDGE_WEIGHTS] = g.edata[self.edge_weight]
                logits = model([g] * self.num_layers, g.ndata[self.input_feature])
            yield nodes, logits[nodes.long()]
            return
        gen = self.schedule.generator(self._last_updated_step, 5)
        for chunk in nodes.split(chunk_size):
            _, out_nodes, blocks = self.blocks_for(chunk, gen)
            yield out_nodes, model(blocks, blocks[0].srcdata[self.input_feature])

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, RuntimeWarning, stacklevel=3)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Everything needed to resume the schedule exactly, for ``torch.save``.

        The score table (scores and written mask), the resume point (the step after the last
        one whose scores were written), the frozen probabilities of the current interval and
        the configuration, which :meth:`load_state_dict` checks.  The draws themselves need no
        generator state: every pool and batch is drawn from a generator seeded with
        ``(seed, step)`` (the same on every rank; blocks with ``(seed, rank, step)``).  Tensors
        are copies on the CPU.
        """
        return {
            "num_nodes": self.scores.values.numel(),
            "train_nids": self.train_nids.detach().to("cpu", copy=True),
            "config": self._config(),
            "scores": self.scores.state_dict(),
            "epoch": self.epoch,
            "next_step": self._last_updated_step + 1,
            "frozen_interval": int(self._frozen_interval[0]),
            "frozen_p": self._frozen_p.detach().to("cpu", copy=True),
            "last_updated_step": self._last_updated_step,
            "since_scores": self._since_scores,
            "uniform_mix": self.uniform_mix,
            "frozen_mix": float(self._frozen_mix[0]),
            # One-hop schedules fix p at an interval's first draw: a resume mid-interval
            # must draw from the same p, not from the scores written since.
            "interval_p": None if self._draw_cache is None or self.has_checkpoints else {
                "interval": int(self._draw_cache.interval),
                "mix": float(self._draw_cache.mix),
                "probs": None if self._draw_cache.probs is None
                else self._draw_cache.probs.detach().to("cpu", copy=True),
            },
            # The seed switch, and the candidate p whose r the current interval measures.
            "seeds": None if self._switch is None else self._switch.state_dict(),
            "candidate": None if self._candidate is None else {
                "interval": self._candidate[0], "mix": self._candidate[2],
                "probs": None if self._candidate[1] is None
                else self._candidate[1].detach().to("cpu", copy=True),
            },
            "blocks": (self.block_sampler.state_dict() if self.block_kind == "onehop" else None),
        }

    def _config(self) -> dict:
        return {
            "batch_size": self.batch_size,
            "num_layers": self.num_layers,
            "block_kind": self.block_kind,
            "fanouts": self.fanouts,
            "checkpoint_every": self.checkpoint_every,
            "pool_size": self.pool_size,
            "probabilities": self.probabilities,
            "draw": self.draw,
            "uniform_mix": self._configured_mix,
            "score_every": self.score_every,
            "edge_weight": self.edge_weight,
            "steps_per_epoch": self.steps_per_epoch,
            "seed": self.seed,
            "rank": self.schedule.rank,
            "world_size": self.schedule.world_size,
            "importance": self.importance,
            "overhead": self._overhead_setting,
        }

    def check_state_dict(self, state: dict) -> None:
        """Raise ValueError naming what differs if ``state`` does not fit this sampler."""
        if not isinstance(state, dict):
            raise ValueError(f"sampler state must be a dict, got {type(state).__name__}")
        missing = [
            key for key in ("num_nodes", "train_nids", "config", "scores", "next_step",
                            "frozen_interval", "frozen_p", "last_updated_step")
            if key not in state
        ]
        if missing:
            raise ValueError(f"sampler state is missing {missing}")
        if state["num_nodes"] != self.scores.values.numel():
            raise ValueError(
                f"sampler state is for a graph of {state['num_nodes']} nodes, this graph "
                f"has {self.scores.values.numel()}"
            )
        saved_nids = torch.as_tensor(state["train_nids"]).cpu()
        nids = self.train_nids.cpu()
        if saved_nids.shape != nids.shape:
            raise ValueError(
                f"sampler state was saved with different train_nids ({saved_nids.numel()} "
                f"nodes saved, {nids.numel()} now)"
            )
        if not torch.equal(saved_nids, nids):
            raise ValueError(
                "sampler state was saved with different train_nids (same count, other nodes "
                "or another order)"
            )
        config = self._config()
        saved = dict(state["config"])
        if not self._seed_given and "seed" in saved:  # a sampler built without seed= takes
            config["seed"] = saved["seed"]             # the saved run's
        for key in ("importance", "overhead"):  # states saved before the seed switch
            saved.setdefault(key, config[key])
        if saved != config:
            diff = {
                key: (saved.get(key, "<absent>"), config.get(key, "<absent>"))
                for key in sorted(set(saved) | set(config))
                if saved.get(key, "<absent>") != config.get(key, "<absent>")
            }
            raise ValueError(f"sampler state has a different configuration (saved, now): {diff}")
        frozen_p = state["frozen_p"]
        if not torch.is_tensor(frozen_p) or tuple(frozen_p.shape) != tuple(self._frozen_p.shape):
            raise ValueError(
                f"sampler state's frozen probabilities have shape "
                f"{tuple(getattr(frozen_p, 'shape', ()))}, expected {tuple(self._frozen_p.shape)}"
            )
        if int(state["next_step"]) < 0:
            raise ValueError(f"sampler state has a negative next step {state['next_step']}")
        self.scores.check_state_dict(state["scores"])
        if self.block_kind == "onehop" and state.get("blocks") is not None:
            self.block_sampler.check_state_dict(state["blocks"])
        for name in ("interval_p", "candidate"):
            saved_p = state.get(name)
            if saved_p is not None and (
                    not isinstance(saved_p, dict) or "interval" not in saved_p
                    or saved_p.get("probs") is not None and (
                        not torch.is_tensor(saved_p["probs"])
                        or tuple(saved_p["probs"].shape) != (self.pool_size,))):
                raise ValueError(
                    f"sampler state's {name} probabilities must be None or a tensor of shape "
                    f"({self.pool_size},)"
                )
        if self._switch is not None and state.get("seeds") is not None:
            self._switch.check_state_dict(state["seeds"])

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`; a mismatch raises ValueError and changes nothing.

        The sampler resumes at the step after the last one whose scores were written: after
        loading, :attr:`epoch` is that step's epoch, and :meth:`step_ids` (after
        ``set_epoch(sampler.epoch)``, which keeps the resume point) gives the remaining steps
        of that epoch.  Build the resumed epoch's DataLoader after loading.
        """
        self.check_state_dict(state)
        if not self._seed_given and "seed" in state["config"]:
            self.schedule.seed = int(state["config"]["seed"])
        self.scores.load_state_dict(state["scores"])
        # Resume at the step after the last one whose scores were written.
        self.schedule.resume(int(state["next_step"]))
        self._frozen_p.copy_(state["frozen_p"])
        self._frozen_interval[0] = int(state["frozen_interval"])
        self._last_updated_step = int(state["last_updated_step"])
        self._through[0] = self._last_updated_step
        self._last_main_draw = self._last_update_call = -1
        self._fallback_interval = self._unscored_step = -1
        self._since_scores = int(state.get("since_scores", 0))
        self.uniform_mix = float(state.get("uniform_mix", self.uniform_mix))
        if self.block_kind == "onehop" and state.get("blocks") is not None:
            self.block_sampler.load_state_dict(state["blocks"])
        self._pool_cache = None
        self._draw_cache = None
        # States saved before the seed switch always published p: read it.
        self._frozen_mix[0] = float(state.get("frozen_mix", 0.0))
        self._order_cache = self._candidate = None
        self._all_written = bool(self.scores.written(self.train_nids).all())
        device = self.train_nids.device
        saved_p = state.get("interval_p")
        if saved_p is not None and not self.has_checkpoints:
            probs = saved_p["probs"]
            mix = float(saved_p.get("mix", 1.0 if probs is None else 0.0))
            self._draw_cache = self._prepare_draws(
                int(saved_p["interval"]), mix, None if probs is None else probs.to(device),
                self.train_nids)
        candidate = state.get("candidate")
        if candidate is not None and self._switch is not None:
            probs = candidate["probs"]
            self._candidate = (int(candidate["interval"]),
                               None if probs is None else probs.to(device),
                               float(candidate["mix"]))
        if self._switch is not None and state.get("seeds") is not None:
            self._switch.load_state_dict(state["seeds"], device)
