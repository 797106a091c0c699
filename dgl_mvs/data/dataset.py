"""The one dataset shape every ``dgl_mvs`` loader returns.

A :class:`NodeClassificationDataset` holds a single homogeneous :class:`dgl.DGLGraph` with
node features, labels and train/validation/test masks in ``ndata``, the way DGL's built-in
node-classification datasets (``CoraGraphDataset``, ``RedditDataset``) do, so that code written
for those runs unchanged on ours.
"""
from __future__ import annotations

import dgl
import torch

REQUIRED_NDATA = ("feat", "label", "train_mask", "val_mask", "test_mask")
MASKS = ("train_mask", "val_mask", "test_mask")


class NodeClassificationDataset:
    """A single-graph node-classification dataset in DGL's style.

    ``ds[0]`` is a homogeneous :class:`dgl.DGLGraph` with

    - ``ndata["feat"]``: ``float32``, shape ``(N, F)``;
    - ``ndata["label"]``: ``int64`` class ids in ``[0, num_classes)``, shape ``(N,)``, or, when
      ``multilabel``, a ``float32`` 0/1 matrix of shape ``(N, num_classes)``;
    - ``ndata["train_mask"]``, ``["val_mask"]``, ``["test_mask"]``: ``bool``, shape ``(N,)``,
      pairwise disjoint (a node may be in none of them).

    Parameters
    ----------
    graph : dgl.DGLGraph
        The graph, carrying the node data above.
    num_classes : int
        Number of classes (single-label) or of label columns (multi-label).
    name : str
        Short name of the dataset, e.g. ``"cora"``.
    multilabel : bool, optional
        Whether labels are a 0/1 matrix. Inferred from the label tensor when omitted
        (2-D means multi-label).
    validate : bool, default True
        Check the contract now (see :meth:`validate`).

    Examples
    --------
    >>> import dgl, torch
    >>> g = dgl.graph(([0, 1], [1, 0]), num_nodes=3)
    >>> g.ndata["feat"] = torch.zeros(3, 4)
    >>> g.ndata["label"] = torch.tensor([0, 1, 1])
    >>> g.ndata["train_mask"] = torch.tensor([True, False, False])
    >>> g.ndata["val_mask"] = torch.tensor([False, True, False])
    >>> g.ndata["test_mask"] = torch.tensor([False, False, True])
    >>> ds = NodeClassificationDataset(g, num_classes=2, name="toy")
    >>> len(ds), ds.num_classes, ds.multilabel, ds[0].num_nodes()
    (1, 2, False, 3)
    """

    def __init__(
        self,
        graph: dgl.DGLGraph,
        num_classes: int,
        name: str,
        multilabel: bool | None = None,
        validate: bool = True,
    ) -> None:
        self._graph = graph
        self.num_classes = int(num_classes)
        self.name = name
        if multilabel is None:
            # A heterograph's ndata maps node types to tensors; validate() reports it.
            label = getattr(graph, "ndata", {}).get("label")
            multilabel = isinstance(label, torch.Tensor) and label.dim() == 2
        self.multilabel = bool(multilabel)
        if validate:
            self.validate()

    def __getitem__(self, idx: int) -> dgl.DGLGraph:
        if idx != 0:
            raise IndexError(f"{self.name} holds one graph; index {idx} is out of range")
        return self._graph

    def __len__(self) -> int:
        return 1

    @property
    def graph(self) -> dgl.DGLGraph:
        """The dataset's graph (the same object as ``ds[0]``)."""
        return self._graph

    def __repr__(self) -> str:
        g = self._graph
        sizes = ", ".join(f"{m.split('_')[0]}={int(g.ndata[m].sum())}" for m in MASKS)
        kind = "multi-label" if self.multilabel else "single-label"
        return (
            f"NodeClassificationDataset(name={self.name!r}, nodes={g.num_nodes()}, "
            f"edges={g.num_edges()}, feat_dim={g.ndata['feat'].shape[1]}, "
            f"classes={self.num_classes} ({kind}), {sizes})"
        )

    def validate(self, check_symmetric: bool = False) -> "NodeClassificationDataset":
        """Check the dataset contract; raise :class:`ValueError` naming what is wrong.

        Parameters
        ----------
        check_symmetric : bool, default False
            Also require every edge ``u -> v`` to have its reverse ``v -> u``.

        Returns
        -------
        NodeClassificationDataset
            ``self``, so that a loader can end with ``return ds.validate()``.

        Examples
        --------
        >>> import dgl, torch
        >>> g = dgl.graph(([0], [1]), num_nodes=2)
        >>> g.ndata["feat"] = torch.zeros(2, 1)
        >>> g.ndata["label"] = torch.tensor([0, 5])
        >>> for m in ("train_mask", "val_mask", "test_mask"):
        ...     g.ndata[m] = torch.tensor([m == "train_mask", False])
        >>> NodeClassificationDataset(g, 2, "bad")
        Traceback (most recent call last):
        ...
        ValueError: bad: ndata['label'] holds class ids outside [0, 2): min 0, max 5
        """
        validate_graph(self._graph, self.num_classes, self.multilabel, self.name,
                       check_symmetric=check_symmetric)
        return self


def validate_graph(
    g: dgl.DGLGraph,
    num_classes: int,
    multilabel: bool,
    name: str = "dataset",
    check_symmetric: bool = False,
) -> None:
    """Check that ``g`` satisfies the :class:`NodeClassificationDataset` contract.

    Raises :class:`ValueError` whose message starts with ``name`` and says what is wrong.
    See :meth:`NodeClassificationDataset.validate`.
    """

    def fail(msg: str) -> None:
        raise ValueError(f"{name}: {msg}")

    if not isinstance(g, dgl.DGLGraph):
        fail(f"expected a dgl.DGLGraph, got {type(g).__name__}")
    if len(g.ntypes) != 1 or len(g.canonical_etypes) != 1:
        fail(f"graph must be homogeneous, has node types {g.ntypes} and edge types {g.etypes}")
    missing = [key for key in REQUIRED_NDATA if key not in g.ndata]
    if missing:
        fail(f"ndata lacks {missing}")
    if num_classes < 1:
        fail(f"num_classes must be positive, got {num_classes}")
    n = g.num_nodes()

    feat = g.ndata["feat"]
    if feat.dtype != torch.float32 or feat.dim() != 2 or feat.shape[0] != n:
        fail(f"ndata['feat'] must be float32 of shape (N={n}, F), got {feat.dtype} "
             f"{tuple(feat.shape)}")
    if not _all_finite(feat):
        fail("ndata['feat'] contains NaN or infinite values")

    label = g.ndata["label"]
    if multilabel:
        if label.dtype != torch.float32 or label.dim() != 2 or label.shape != (n, num_classes):
            fail(f"multi-label ndata['label'] must be float32 of shape ({n}, {num_classes}), "
                 f"got {label.dtype} {tuple(label.shape)}")
        if not ((label == 0) | (label == 1)).all():
            fail("multi-label ndata['label'] must hold only 0 and 1")
    else:
        if label.dtype != torch.int64 or label.dim() != 1 or label.shape[0] != n:
            fail(f"ndata['label'] must be int64 of shape ({n},), got {label.dtype} "
                 f"{tuple(label.shape)}")
        if n and (int(label.min()) < 0 or int(label.max()) >= num_classes):
            fail(f"ndata['label'] holds class ids outside [0, {num_classes}): "
                 f"min {int(label.min())}, max {int(label.max())}")

    total = torch.zeros(n, dtype=torch.int64)
    for key in MASKS:
        mask = g.ndata[key]
        if mask.dtype != torch.bool or mask.dim() != 1 or mask.shape[0] != n:
            fail(f"ndata[{key!r}] must be bool of shape ({n},), got {mask.dtype} "
                 f"{tuple(mask.shape)}")
        total += mask
    if n and int(total.max()) > 1:
        fail(f"train/val/test masks overlap on {int((total > 1).sum())} nodes")
    if not bool(g.ndata["train_mask"].any()):
        fail("train_mask selects no node")

    if check_symmetric and not is_symmetric(g):
        fail("graph is not symmetric: some edge u -> v has no reverse v -> u")


def _all_finite(x: torch.Tensor) -> bool:
    """NaN/inf check without an N x F boolean temporary in the common (finite) case."""
    # A NaN or inf makes its column sum non-finite; only an overflowing sum of huge but
    # finite values gets here wrongly, so confirm with the exact check, chunk by chunk.
    if x.numel() == 0 or bool(torch.isfinite(x.sum(dim=0)).all()):
        return True
    return all(bool(torch.isfinite(part).all()) for part in torch.split(x, 1 << 20))


def is_symmetric(g: dgl.DGLGraph) -> bool:
    """Whether every edge ``u -> v`` of ``g`` has a reverse ``v -> u`` (as multisets).

    Examples
    --------
    >>> import dgl
    >>> is_symmetric(dgl.graph(([0, 1], [1, 0]))), is_symmetric(dgl.graph(([0], [1])))
    (True, False)
    """
    src, dst = g.edges()
    n = g.num_nodes()
    forward = torch.sort(src.long() * n + dst.long()).values
    backward = torch.sort(dst.long() * n + src.long()).values
    return bool(torch.equal(forward, backward))
