"""Synthetic node-classification graphs at any scale: a degree-corrected stochastic block model.

Everything is vectorised with numpy (no Python loop over nodes or edges), so a graph of one
million nodes and twenty million directed edges takes seconds; memory stays near the size of
the output (edge list, ``N x F`` float32 features, labels).
"""
from __future__ import annotations

import math

import dgl
import numpy as np
import torch

from .dataset import NodeClassificationDataset

# Rows (or edges) handled per vectorised chunk: bounds the temporaries at large scale.
_CHUNK = 1 << 22


def synthetic_graph(
    num_nodes: int = 10_000,
    avg_degree: float = 20.0,
    num_classes: int = 10,
    feat_dim: int = 64,
    homophily: float = 0.7,
    power_law_exponent: float | None = 2.5,
    signal_to_noise: float = 2.0,
    multilabel: bool = False,
    num_labels: int | None = None,
    labels_per_node: int = 3,
    train_frac: float = 0.6,
    val_frac: float = 0.2,
    test_frac: float = 0.2,
    seed: int = 0,
) -> NodeClassificationDataset:
    """Generate a node-classification graph from a degree-corrected stochastic block model.

    **Blocks.** Each node falls into one of ``num_classes`` blocks uniformly at random.

    **Degrees.** Each node gets a propensity ``theta_i`` from a Pareto law with density
    ``~ theta^-power_law_exponent`` (``theta >= 1``), so degrees are heavy-tailed like those
    of real graphs (Reddit, Yelp, ogbn-products); ``power_law_exponent=None`` gives every node
    the same propensity (a plain SBM with Poisson-like degrees). Expected degrees are
    ``avg_degree * theta_i / mean(theta)``, capped at ``num_nodes - 1``.

    **Edges.** ``num_nodes * avg_degree / 2`` undirected edges: a fraction ``homophily``
    of them join two nodes of the same block, the rest two nodes of different blocks, and
    within each kind the pair ``(i, j)`` is drawn with probability proportional to
    ``theta_i * theta_j``. So ``homophily`` is the fraction of intra-block edges
    (``1 / num_classes`` means no block structure, lower is heterophilous). Self-loops and
    duplicates are dropped and redrawn (a few rounds, to within 0.1%), and every edge is
    stored in both directions, so ``g.num_edges()`` is about ``num_nodes * avg_degree``
    (less on tiny graphs that cannot hold that many distinct pairs).

    **Features.** ``x_i = m_i + e_i`` with noise ``e_i ~ N(0, I_F)``. Single-label: ``m_i``
    is the mean of node ``i``'s class. Multi-label: ``m_i`` is the sum of the means of
    node ``i``'s labels divided by the square root of their number. Every mean has squared
    norm ``signal_to_noise`` and the means are orthogonal when there are no more of them
    than ``feat_dim`` (random directions otherwise), so two classes' means lie
    ``sqrt(2 * signal_to_noise)`` noise standard deviations apart. Low values make the
    features alone weak evidence, which aggregating over same-block neighbours strengthens.

    **Multi-label.** With ``multilabel=True`` each block has a label profile over
    ``num_labels`` labels (a Dirichlet(0.2) draw, so a few labels dominate) and each node
    takes the distinct labels among ``labels_per_node`` draws from its block's profile.
    Labels are then a float32 0/1 matrix and ``ds.num_classes == num_labels``; the blocks
    stay latent.

    **Split.** A seeded random ``train_frac`` / ``val_frac`` / ``test_frac`` partition
    (nodes beyond the three fractions belong to no mask).

    Parameters
    ----------
    num_nodes : int, default 10_000
        Number of nodes (tested from 1k to 5M).
    avg_degree : float, default 20.0
        Mean degree, i.e. ``g.num_edges() / num_nodes``.
    num_classes : int, default 10
        Number of blocks; in single-label mode also the number of classes.
    feat_dim : int, default 64
        Feature dimension ``F``.
    homophily : float, default 0.7
        Fraction of edges whose endpoints share a block, in ``[0, 1]`` (forced to 1 when
        there is a single block).
    power_law_exponent : float or None, default 2.5
        Exponent ``> 2`` of the degree-propensity power law (smaller = heavier tail), or
        ``None`` for equal propensities.
    signal_to_noise : float, default 2.0
        Squared norm of each class (or label) mean over the unit noise variance per
        feature; ``0`` makes features pure noise.
    multilabel : bool, default False
        Produce multi-label 0/1 targets (like PPI or Yelp).
    num_labels : int, optional
        Number of labels in multi-label mode; defaults to ``2 * num_classes``.
    labels_per_node : int, default 3
        Draws per node from its block's label profile (multi-label mode); a node ends up
        with between 1 and this many distinct labels.
    train_frac, val_frac, test_frac : float, default 0.6, 0.2, 0.2
        Split fractions; their sum must not exceed 1.
    seed : int, default 0
        Seed. Blocks, edges, features, labels and split come from independent streams
        derived from it, so the same seed always gives the same dataset.

    Returns
    -------
    NodeClassificationDataset
        Named ``"synthetic"``; its graph is symmetric, without self-loops or duplicates.

    Examples
    --------
    >>> ds = synthetic_graph(2_000, avg_degree=10, num_classes=4, feat_dim=16, seed=1)
    >>> g = ds[0]
    >>> g.num_nodes(), ds.num_classes, g.ndata["feat"].shape, g.ndata["feat"].dtype
    (2000, 4, torch.Size([2000, 16]), torch.float32)
    >>> ml = synthetic_graph(1_000, multilabel=True, num_labels=12, seed=1)
    >>> ml.multilabel, ml[0].ndata["label"].shape
    (True, torch.Size([1000, 12]))
    """
    _check_args(num_nodes, avg_degree, num_classes, feat_dim, homophily, power_law_exponent,
                signal_to_noise, multilabel, num_labels, labels_per_node,
                (train_frac, val_frac, test_frac))
    if num_labels is None:
        num_labels = 2 * num_classes
    # Independent streams: changing feat_dim, say, leaves the graph and split unchanged.
    streams = np.random.SeedSequence(seed).spawn(7)
    rng_block, rng_theta, rng_edge, rng_label, rng_feat, rng_split = (
        np.random.default_rng(s) for s in streams[:6]
    )
    # torch draws the N x F Gaussian noise about twice as fast as numpy.
    noise_gen = torch.Generator().manual_seed(int(streams[6].generate_state(1)[0]))
    n = int(num_nodes)

    block = rng_block.integers(0, num_classes, size=n, dtype=np.int64)
    theta = _degree_propensity(n, avg_degree, power_law_exponent, rng_theta)
    src, dst = _dcsbm_edges(block, theta, num_classes, n * avg_degree / 2.0, homophily,
                            rng_edge)
    g = dgl.graph((torch.from_numpy(src), torch.from_numpy(dst)), num_nodes=n)
    del src, dst

    if multilabel:
        label = _multilabel_targets(block, num_classes, num_labels, labels_per_node, rng_label)
        means = _class_means(num_labels, feat_dim, signal_to_noise, rng_feat)
        feat = _multilabel_features(label, means, noise_gen)
        out_classes = num_labels
    else:
        means = _class_means(num_classes, feat_dim, signal_to_noise, rng_feat)
        feat = _class_features(block, means, noise_gen)
        label = block
        out_classes = num_classes

    train, val, test = _fraction_split(n, train_frac, val_frac, test_frac, rng_split)
    g.ndata["feat"] = feat
    g.ndata["label"] = torch.from_numpy(label)
    g.ndata["train_mask"] = torch.from_numpy(train)
    g.ndata["val_mask"] = torch.from_numpy(val)
    g.ndata["test_mask"] = torch.from_numpy(test)
    return NodeClassificationDataset(g, num_classes=out_classes, name="synthetic",
                                     multilabel=multilabel)


def _check_args(num_nodes, avg_degree, num_classes, feat_dim, homophily, exponent, snr,
                multilabel, num_labels, labels_per_node, fracs) -> None:
    if num_nodes < 2:
        raise ValueError(f"num_nodes must be at least 2, got {num_nodes}")
    if not 0 < avg_degree <= num_nodes - 1:
        raise ValueError(f"avg_degree must be in (0, num_nodes - 1], got {avg_degree}")
    if num_classes < 1 or feat_dim < 1:
        raise ValueError("num_classes and feat_dim must be positive")
    if not 0.0 <= homophily <= 1.0:
        raise ValueError(f"homophily must be in [0, 1], got {homophily}")
    if exponent is not None and not exponent > 2.0:
        raise ValueError(f"power_law_exponent must be > 2 (finite mean degree) or None, "
                         f"got {exponent}")
    if snr < 0:
        raise ValueError(f"signal_to_noise must be >= 0, got {snr}")
    if multilabel and ((num_labels is not None and num_labels < 1) or labels_per_node < 1):
        raise ValueError("num_labels and labels_per_node must be positive")
    if min(fracs) < 0 or sum(fracs) > 1.0 + 1e-9:
        raise ValueError(f"split fractions must be >= 0 and sum to at most 1, got {fracs}")


def _degree_propensity(n: int, avg_degree: float, exponent: float | None,
                       rng: np.random.Generator) -> np.ndarray:
    """Pareto(``exponent - 1``) propensities with min 1, capped so no expected degree > n-1."""
    if exponent is None:
        return np.ones(n, dtype=np.float64)
    # numpy's pareto is Lomax; +1 makes it Pareto I with tail P(theta > x) = x^-(exponent-1).
    theta = rng.pareto(exponent - 1.0, size=n) + 1.0
    cap = (n - 1) * theta.mean() / avg_degree
    return np.minimum(theta, cap, out=theta)


def _dcsbm_edges(block: np.ndarray, theta: np.ndarray, num_classes: int,
                 num_edges: float, homophily: float,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Sample undirected DC-SBM edges; return both directions, deduplicated, no self-loops.

    Drawing ``m`` endpoints proportionally to ``theta`` is one multinomial over the nodes
    (O(N), no per-draw search); two such multisets, one shuffled, give ``m`` independent
    pairs. Same-block pairs are drawn block by block, cross-block pairs by rejection of
    the same-block ones.
    """
    n = len(block)
    order = np.argsort(block, kind="stable")
    first = np.concatenate([[0], np.cumsum(np.bincount(block, minlength=num_classes))])
    members = [order[first[c]:first[c + 1]] for c in range(num_classes)]
    mass = np.bincount(block, weights=theta, minlength=num_classes)
    total = mass.sum()
    # Chance that a theta-proportional pair falls inside one block.
    same_share = float((mass**2).sum() / total**2)
    if same_share > 1.0 - 1e-9:
        homophily = 1.0

    target_same = int(round(num_edges * homophily))
    target_other = int(round(num_edges)) - target_same
    same = other = np.empty(0, dtype=np.int64)  # disjoint: a pair is one kind or the other
    # Duplicates (hubs meeting hubs) and self-loops are dropped; topping each kind up
    # separately keeps the realised homophily on target (same-block pairs collide more).
    for _ in range(6):
        miss_same = max(target_same - len(same), 0)
        miss_other = max(target_other - len(other), 0)
        if miss_same + miss_other <= 0.001 * (target_same + target_other):
            break
        new_same, new_other = [], []
        for done in range(0, miss_same, _CHUNK):
            m = min(_CHUNK, miss_same - done)
            per_block = rng.multinomial(m, mass**2 / (mass**2).sum())
            for c in np.flatnonzero(per_block):
                p = theta[members[c]] / mass[c]
                new_same.append(_pairs(members[c], p, int(per_block[c]), n, rng))
        for done in range(0, miss_other, _CHUNK):
            # Rejection keeps the cross-block pairs; oversample so about m of them stay.
            m = int(math.ceil(min(_CHUNK, miss_other - done) / (1.0 - same_share)))
            new_other.append(_pairs(np.arange(n), theta / total, m, n, rng, block=block))
        if new_same:
            same = _merge_unique(same, np.unique(np.concatenate(new_same)))
        if new_other:
            other = _merge_unique(other, np.unique(np.concatenate(new_other)))
    keys = np.concatenate([same, other])
    del same, other
    lo = keys // n
    hi = keys - lo * n
    del keys
    return np.concatenate([lo, hi]), np.concatenate([hi, lo])


def _merge_unique(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Union of two sorted duplicate-free arrays, sorted, without re-sorting from scratch."""
    if len(a) == 0:
        return b
    merged = np.concatenate([a, b])
    merged.sort(kind="stable")  # timsort: two sorted runs merge in linear time
    keep = np.empty(len(merged), dtype=bool)
    keep[0] = True
    np.not_equal(merged[1:], merged[:-1], out=keep[1:])
    return merged[keep]


def _pairs(nodes: np.ndarray, p: np.ndarray, m: int, n: int, rng: np.random.Generator,
           block: np.ndarray | None = None) -> np.ndarray:
    """``m`` iid pairs from ``nodes`` with probabilities ``p`` as keys ``min * n + max``.

    Self-loops are dropped, and same-block pairs too when ``block`` is given.
    """
    src = np.repeat(nodes, rng.multinomial(m, p))
    dst = np.repeat(nodes, rng.multinomial(m, p))
    rng.shuffle(dst)  # a random matching of two iid multisets is a set of iid pairs
    keep = src != dst
    if block is not None:
        keep &= block[src] != block[dst]
    src, dst = src[keep], dst[keep]
    return np.minimum(src, dst) * n + np.maximum(src, dst)


def _class_means(k: int, dim: int, snr: float, rng: np.random.Generator) -> np.ndarray:
    """``k`` mean vectors of squared norm ``snr``: orthogonal if ``k <= dim``, else random."""
    raw = rng.standard_normal((dim, k))
    if k <= dim:
        raw, _ = np.linalg.qr(raw)  # orthonormal columns
    else:
        raw /= np.linalg.norm(raw, axis=0, keepdims=True)
    return (raw.T * math.sqrt(snr)).astype(np.float32)


def _class_features(block: np.ndarray, means: np.ndarray,
                    gen: torch.Generator) -> torch.Tensor:
    """Unit Gaussian noise plus the class mean, added in row chunks to bound temporaries."""
    feat = torch.randn(len(block), means.shape[1], generator=gen)
    means_t, block_t = torch.from_numpy(means), torch.from_numpy(block)
    for start in range(0, len(block), _CHUNK):
        feat[start:start + _CHUNK] += means_t[block_t[start:start + _CHUNK]]
    return feat


def _multilabel_targets(block: np.ndarray, num_classes: int, num_labels: int, draws: int,
                        rng: np.random.Generator) -> np.ndarray:
    """``(N, num_labels)`` float32 0/1 targets: ``draws`` labels per node from its block."""
    n = len(block)
    profile = rng.dirichlet(np.full(num_labels, 0.2), size=num_classes)
    # Block c's CDF shifted to [c, c + 1]: one searchsorted serves every block at once.
    cdf = (np.cumsum(profile, axis=1) + np.arange(num_classes)[:, None]).ravel()
    target = np.zeros((n, num_labels), dtype=np.float32)
    for start in range(0, n, _CHUNK):
        rows = block[start:start + _CHUNK]
        flat = np.searchsorted(cdf, rows[:, None] + rng.random((len(rows), draws)),
                               side="right")
        # Label index within the block's row; float rounding can overshoot by one.
        labels = (flat - rows[:, None] * num_labels).clip(0, num_labels - 1)
        target[np.arange(start, start + len(rows))[:, None], labels] = 1.0
    return target


def _multilabel_features(target: np.ndarray, means: np.ndarray,
                         gen: torch.Generator) -> torch.Tensor:
    """Noise plus the sum of a node's label means over sqrt(number of its labels)."""
    feat = torch.randn(len(target), means.shape[1], generator=gen)
    means_t = torch.from_numpy(means)
    for start in range(0, len(target), _CHUNK):
        rows = torch.from_numpy(target[start:start + _CHUNK])
        feat[start:start + len(rows)] += (rows @ means_t) / rows.sum(1, keepdim=True).sqrt()
    return feat


def _fraction_split(n: int, train_frac: float, val_frac: float, test_frac: float,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Disjoint boolean masks covering the given fractions of a random permutation."""
    perm = rng.permutation(n)
    n_train = max(1, int(round(train_frac * n)))
    n_val = int(round(val_frac * n))
    n_test = min(int(round(test_frac * n)), n - n_train - n_val)
    masks = []
    for lo, hi in ((0, n_train), (n_train, n_train + n_val),
                   (n_train + n_val, n_train + n_val + n_test)):
        mask = np.zeros(n, dtype=bool)
        mask[perm[lo:hi]] = True
        masks.append(mask)
    return masks[0], masks[1], masks[2]
