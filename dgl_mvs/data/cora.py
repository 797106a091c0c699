"""Cora, offline, from the copy that ships inside the ``graphdatascience`` wheel."""
from __future__ import annotations

import importlib.metadata as metadata
from pathlib import Path

import dgl
import numpy as np
import torch

from .dataset import NodeClassificationDataset

_INSTALL_HINT = "install it with: pip install 'dgl_mvs[data]'"
_RESOURCE_DIR = "graphdatascience/resources/cora"
NUM_FEATURES = 1433

#: Class names in id order, as assigned by graphdatascience's ``serialize_cora.py``.
CORA_CLASSES = (
    "Neural_Networks",
    "Rule_Learning",
    "Reinforcement_Learning",
    "Probabilistic_Methods",
    "Theory",
    "Genetic_Algorithms",
    "Case_Based",
)


def cora_files() -> tuple[Path, Path]:
    """Paths of the Cora node and relationship parquet files inside ``graphdatascience``.

    Found through the package metadata, so the Neo4j client is never imported.

    Raises
    ------
    ImportError
        If ``graphdatascience`` is not installed (or its copy lacks the files).
    """
    try:
        dist = metadata.distribution("graphdatascience")
    except metadata.PackageNotFoundError as err:
        raise ImportError(
            f"The offline Cora dataset is read from the 'graphdatascience' package, which is "
            f"not installed; {_INSTALL_HINT}"
        ) from err
    paths = tuple(
        Path(str(dist.locate_file(f"{_RESOURCE_DIR}/cora_{part}.parquet.gzip")))
        for part in ("nodes", "rels")
    )
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ImportError(
            f"graphdatascience {dist.version} does not ship the Cora files {missing}; "
            f"{_INSTALL_HINT}"
        )
    return paths  # type: ignore[return-value]


def _read_cora() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Features ``(N, 1433)`` float32, labels ``(N,)`` int64, edge endpoints as row indices."""
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise ImportError(f"Reading Cora needs pyarrow; {_INSTALL_HINT}") from err
    nodes_path, rels_path = cora_files()
    nodes = pq.read_table(nodes_path, columns=["nodeId", "subject", "features"])
    rels = pq.read_table(rels_path, columns=["sourceNodeId", "targetNodeId"])

    node_ids = nodes.column("nodeId").to_numpy()
    labels = nodes.column("subject").to_numpy().astype(np.int64)
    lists = nodes.column("features").combine_chunks()
    lengths = lists.value_lengths().to_numpy(zero_copy_only=False)
    if not (lengths == NUM_FEATURES).all():
        raise ValueError(f"Cora feature lists must all have {NUM_FEATURES} entries")
    # The list column's flat values are the row-major feature matrix.
    feat = lists.flatten().to_numpy().astype(np.float32).reshape(len(node_ids), NUM_FEATURES)

    # Paper ids are sparse (35 .. 1155073): map them to row numbers by binary search.
    order = np.argsort(node_ids)
    sorted_ids = node_ids[order]

    def to_rows(ids: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(sorted_ids, ids).clip(max=len(sorted_ids) - 1)
        if not (sorted_ids[pos] == ids).all():
            raise ValueError("Cora relationships reference unknown node ids")
        return order[pos]

    src = to_rows(rels.column("sourceNodeId").to_numpy())
    dst = to_rows(rels.column("targetNodeId").to_numpy())
    return feat, labels, src, dst


def planetoid_style_split(
    labels: np.ndarray,
    num_classes: int,
    per_class: int = 20,
    num_val: int = 500,
    num_test: int = 1000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded split: ``per_class`` training nodes per class, then ``num_val`` and ``num_test``.

    Validation and test nodes are drawn uniformly from the nodes not used for training.

    Returns
    -------
    tuple of numpy.ndarray
        Boolean train, validation and test masks, pairwise disjoint.

    Examples
    --------
    >>> import numpy as np
    >>> tr, va, te = planetoid_style_split(np.repeat([0, 1], 50), 2, 5, 10, 20)
    >>> int(tr.sum()), int(va.sum()), int(te.sum())
    (10, 10, 20)
    """
    n = len(labels)
    counts = np.bincount(labels, minlength=num_classes)
    if counts.min() < per_class:
        raise ValueError(f"a class has {counts.min()} nodes, fewer than per_class={per_class}")
    if num_classes * per_class + num_val + num_test > n:
        raise ValueError(f"split sizes exceed the {n} nodes")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    # Stable sort keeps the random order within each class; the first per_class of each
    # class's run are its training nodes.
    by_class = perm[np.argsort(labels[perm], kind="stable")]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(n) - np.repeat(starts, counts)
    train = np.zeros(n, dtype=bool)
    train[by_class[rank < per_class]] = True
    rest = perm[~train[perm]]
    val = np.zeros(n, dtype=bool)
    val[rest[:num_val]] = True
    test = np.zeros(n, dtype=bool)
    test[rest[num_val:num_val + num_test]] = True
    return train, val, test


def load_cora(
    seed: int = 0,
    self_loop: bool = False,
    row_normalize: bool = False,
    per_class: int = 20,
    num_val: int = 500,
    num_test: int = 1000,
) -> NodeClassificationDataset:
    """Load Cora (2,708 papers, 1,433 binary word features, 7 classes) without a download.

    The data are the copy bundled in the ``graphdatascience`` wheel
    (``graphdatascience/resources/cora/cora_{nodes,rels}.parquet.gzip``), read with pyarrow;
    the Neo4j client is never imported. The citation graph is made symmetric (each citation
    becomes two directed edges, duplicates removed: 10,556 edges), without self-loops unless
    ``self_loop=True``.

    No split ships with these files, and the public Planetoid split (Yang et al., 2016)
    **cannot be rebuilt from them**: their node order and paper ids differ from the Planetoid
    files, so its node indices do not carry over. Instead a seeded split in the same shape is
    drawn: ``per_class`` training nodes per class (140 by default), then ``num_val`` (500)
    validation and ``num_test`` (1,000) test nodes uniformly from the rest. Accuracies are
    therefore comparable to, but not identical with, published Planetoid-split numbers.

    Parameters
    ----------
    seed : int, default 0
        Seed of the split.
    self_loop : bool, default False
        Add one self-loop per node.
    row_normalize : bool, default False
        Divide each feature row by its sum (as DGL's ``CoraGraphDataset`` does).
    per_class, num_val, num_test : int
        Split sizes (defaults 20, 500, 1000).

    Returns
    -------
    NodeClassificationDataset
        Single-label, ``num_classes == 7``; class names are in :data:`CORA_CLASSES`.

    Raises
    ------
    ImportError
        If ``graphdatascience`` or ``pyarrow`` is missing (``pip install 'dgl_mvs[data]'``).

    Examples
    --------
    >>> ds = load_cora()
    >>> g = ds[0]
    >>> g.num_nodes(), g.ndata["feat"].shape[1], ds.num_classes, int(g.ndata["train_mask"].sum())
    (2708, 1433, 7, 140)
    """
    feat, labels, src, dst = _read_cora()
    num_classes = len(CORA_CLASSES)
    n = len(labels)

    g = dgl.graph((torch.from_numpy(src), torch.from_numpy(dst)), num_nodes=n)
    g = dgl.to_bidirected(g)  # adds reverse edges and merges duplicates
    g = dgl.remove_self_loop(g)
    if self_loop:
        g = dgl.add_self_loop(g)

    if row_normalize:
        feat = feat / np.maximum(feat.sum(axis=1, keepdims=True), 1.0)
    train, val, test = planetoid_style_split(labels, num_classes, per_class, num_val, num_test,
                                             seed)
    g.ndata["feat"] = torch.from_numpy(np.ascontiguousarray(feat, dtype=np.float32))
    g.ndata["label"] = torch.from_numpy(labels)
    g.ndata["train_mask"] = torch.from_numpy(train)
    g.ndata["val_mask"] = torch.from_numpy(val)
    g.ndata["test_mask"] = torch.from_numpy(test)
    return NodeClassificationDataset(g, num_classes=num_classes, name="cora", multilabel=False)
