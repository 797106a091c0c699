"""Loaders for the benchmark datasets users download: Reddit, PPI, Flickr, Yelp, ogbn-*.

Each loader fetches the data through its own library on first use (``dgl.data`` for Reddit,
PPI, Flickr and Yelp; ``ogb`` for ogbn-arxiv and ogbn-products), caches it under ``root``,
and converts it to a :class:`~dgl_mvs.data.dataset.NodeClassificationDataset`. The
conversions are pure functions (:func:`_from_dgl_graph`, :func:`_merge_ppi`,
:func:`_from_ogb`) so they can be checked on small hand-built graphs.

Cache folder: ``root`` when given, else ``$DGL_MVS_DATA_DIR``, else ``~/.dgl_mvs/data``.
Pass ``root="~/.dgl"`` to reuse copies DGL's own loaders already downloaded.
"""
from __future__ import annotations

import os
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import dgl
import torch

from .dataset import NodeClassificationDataset

T = TypeVar("T")
DATA_DIR_ENV = "DGL_MVS_DATA_DIR"
_OGB_HINT = "ogbn datasets need the 'ogb' package; install it with: pip install ogb"
# What a failed download raises in dgl.data (requests errors are OSErrors; DGL raises
# RuntimeError on an HTTP error status) and in ogb (urllib's URLError; EOFError when its
# "proceed? (y/N)" prompt for downloads over 1 GB meets a closed stdin).
_DOWNLOAD_ERRORS = (OSError, RuntimeError, EOFError, zipfile.BadZipFile)


class DatasetDownloadError(RuntimeError):
    """A dataset is not in the cache and could not be downloaded."""


def default_root() -> Path:
    """The cache folder used when a loader gets no ``root``.

    ``$DGL_MVS_DATA_DIR`` if set, else ``~/.dgl_mvs/data``.

    Examples
    --------
    >>> default_root()  # doctest: +SKIP
    PosixPath('/home/me/.dgl_mvs/data')
    """
    return Path(os.environ.get(DATA_DIR_ENV) or Path.home() / ".dgl_mvs" / "data").expanduser()


def _root(root: str | os.PathLike | None) -> Path:
    return default_root() if root is None else Path(root).expanduser()


def _fetch(dataset: str, cache_dir: Path, make: Callable[[], T]) -> T:
    """Run ``make`` (which may download); turn a failed download into a plain message."""
    try:
        return make()
    except _DOWNLOAD_ERRORS as err:
        raise DatasetDownloadError(
            f"Could not load the {dataset} dataset: it is not in the cache, and downloading "
            f"it needs network access, which failed ({type(err).__name__}: {err}). "
            f"It would be cached in {cache_dir}. Run once on a machine with network access "
            f"and copy that folder here, or pass root=... pointing to an existing copy."
        ) from err
    except SystemExit as err:  # ogb calls exit() when its download prompt is declined
        raise DatasetDownloadError(
            f"Download of the {dataset} dataset was declined; it would be cached in "
            f"{cache_dir}."
        ) from err


# ---------------------------------------------------------------------------------------
# Conversions (pure: no download, no file access)
# ---------------------------------------------------------------------------------------

def _from_dgl_graph(
    g: dgl.DGLGraph,
    name: str,
    num_classes: int | None = None,
    multilabel: bool = False,
    symmetrize: bool = False,
) -> NodeClassificationDataset:
    """Convert a graph carrying DGL's usual node data to a ``NodeClassificationDataset``.

    ``g.ndata`` must hold ``feat``, ``label`` and the three masks (as DGL's Reddit, Flickr
    and Yelp graphs do). Other node and edge data are dropped; dtypes are normalised
    (float32 features, int64 labels, or float32 0/1 when ``multilabel``, bool masks).

    Examples
    --------
    >>> import dgl, torch
    >>> g = dgl.graph(([0, 1, 2], [1, 2, 0]))
    >>> g.ndata["feat"] = torch.ones(3, 2, dtype=torch.float64)
    >>> g.ndata["label"] = torch.tensor([[0], [1], [1]])
    >>> g.ndata["train_mask"] = torch.tensor([1, 0, 0])
    >>> g.ndata["val_mask"] = torch.tensor([0, 1, 0])
    >>> g.ndata["test_mask"] = torch.tensor([0, 0, 1])
    >>> ds = _from_dgl_graph(g, "toy", symmetrize=True)
    >>> ds[0].num_edges(), ds[0].ndata["label"].tolist(), ds.num_classes
    (6, [0, 1, 1], 2)
    """
    missing = [k for k in ("feat", "label", "train_mask", "val_mask", "test_mask")
               if k not in g.ndata]
    if missing:
        raise ValueError(f"{name}: the source graph lacks ndata {missing}")
    src, dst = g.edges()
    out = dgl.graph((src, dst), num_nodes=g.num_nodes())
    if symmetrize:
        out = dgl.to_bidirected(out)  # adds reverse edges and merges duplicates
    label = g.ndata["label"]
    if multilabel:
        label = label.to(torch.float32)
        if num_classes is None:
            num_classes = label.shape[1]
    else:
        if label.dim() == 2 and label.shape[1] == 1:  # OGB-style column of class ids
            label = label.reshape(-1)
        label = label.to(torch.int64)
        if num_classes is None:
            num_classes = int(label.max()) + 1
    out.ndata["feat"] = g.ndata["feat"].to(torch.float32)
    out.ndata["label"] = label
    for key in ("train_mask", "val_mask", "test_mask"):
        out.ndata[key] = g.ndata[key].to(torch.bool)
    return NodeClassificationDataset(out, num_classes=num_classes, name=name,
                                     multilabel=multilabel)


def _merge_ppi(
    train: Sequence[dgl.DGLGraph],
    val: Sequence[dgl.DGLGraph],
    test: Sequence[dgl.DGLGraph],
    name: str = "ppi",
) -> NodeClassificationDataset:
    """Merge PPI's train/valid/test graph lists into one graph with masks.

    PPI is 24 separate protein graphs (20 train, 2 valid, 2 test), each with ``feat`` and a
    float 0/1 ``label`` matrix. They become one disconnected graph (``dgl.batch`` order:
    train graphs, then valid, then test); every node of a train graph is a training node,
    and so on. Labels stay multi-label.

    Examples
    --------
    >>> import dgl, torch
    >>> def part(n):
    ...     g = dgl.graph(([0], [1]), num_nodes=n)
    ...     g.ndata["feat"], g.ndata["label"] = torch.ones(n, 3), torch.ones(n, 4)
    ...     return g
    >>> ds = _merge_ppi([part(2), part(3)], [part(2)], [part(4)])
    >>> ds[0].num_nodes(), int(ds[0].ndata["train_mask"].sum()), ds.num_classes
    (11, 5, 4)
    """
    parts = [list(train), list(val), list(test)]
    if not parts[0]:
        raise ValueError(f"{name}: no training graphs to merge")
    graphs = [g for part in parts for g in part]
    # Only the fields we keep: dgl.batch needs the same ndata keys on every graph, and the
    # subgraphs PPI builds also carry dgl.NID / dgl.EID, which we drop.
    plain = []
    for g in graphs:
        h = dgl.graph(g.edges(), num_nodes=g.num_nodes())
        h.ndata["feat"] = g.ndata["feat"]
        h.ndata["label"] = g.ndata["label"]
        plain.append(h)
    merged = dgl.batch(plain)
    part_sizes = torch.tensor([sum(g.num_nodes() for g in part) for part in parts])
    which = torch.repeat_interleave(torch.arange(3), part_sizes)
    merged.ndata["train_mask"] = which == 0
    merged.ndata["val_mask"] = which == 1
    merged.ndata["test_mask"] = which == 2
    return _from_dgl_graph(merged, name, multilabel=True)


def _from_ogb(
    graph: dgl.DGLGraph,
    label: torch.Tensor,
    split_idx: dict,
    name: str,
    num_classes: int | None = None,
    symmetrize: bool = False,
) -> NodeClassificationDataset:
    """Convert what ``ogb.nodeproppred.DglNodePropPredDataset`` gives to our shape.

    Parameters
    ----------
    graph : dgl.DGLGraph
        ``dataset[0][0]``, with ``ndata["feat"]``.
    label : torch.Tensor
        ``dataset[0][1]``, class ids of shape ``(N, 1)`` (or ``(N,)``); flattened to int64.
    split_idx : dict
        ``dataset.get_idx_split()``: node ids under ``"train"``, ``"valid"``, ``"test"``.
    name : str
        Dataset name.
    num_classes : int, optional
        ``dataset.num_classes``; inferred from the labels when omitted.
    symmetrize : bool, default False
        Add reverse edges (ogbn-arxiv is a directed citation graph).

    Examples
    --------
    >>> import dgl, torch
    >>> g = dgl.graph(([0, 1], [1, 2]), num_nodes=3)
    >>> g.ndata["feat"] = torch.zeros(3, 2)
    >>> split = {"train": torch.tensor([0]), "valid": torch.tensor([1]),
    ...          "test": torch.tensor([2])}
    >>> ds = _from_ogb(g, torch.tensor([[2], [0], [1]]), split, "toy", symmetrize=True)
    >>> ds[0].num_edges(), ds[0].ndata["label"].tolist(), ds.num_classes
    (4, [2, 0, 1], 3)
    """
    n = graph.num_nodes()
    label = torch.as_tensor(label)
    if label.is_floating_point():
        if torch.isnan(label).any():
            raise ValueError(f"{name}: some nodes have no label (NaN); not supported")
    label = label.reshape(-1).to(torch.int64)
    if label.shape[0] != n:
        raise ValueError(f"{name}: {label.shape[0]} labels for {n} nodes")
    masks = {}
    for ours, theirs in (("train_mask", "train"), ("val_mask", "valid"), ("test_mask", "test")):
        mask = torch.zeros(n, dtype=torch.bool)
        mask[torch.as_tensor(split_idx[theirs], dtype=torch.int64)] = True
        masks[ours] = mask
    g = dgl.graph(graph.edges(), num_nodes=n)
    g.ndata["feat"] = graph.ndata["feat"]
    g.ndata["label"] = label
    g.ndata.update(masks)
    return _from_dgl_graph(g, name, num_classes=num_classes, symmetrize=symmetrize)


# ---------------------------------------------------------------------------------------
# Loaders (download on first use)
# ---------------------------------------------------------------------------------------

def _dgl_loader(cls_name: str, display: str, folder: str, root, multilabel: bool,
                **kwargs) -> NodeClassificationDataset:
    import dgl.data

    root = _root(root)
    cls = getattr(dgl.data, cls_name)  # looked up at call time, so tests can stand in
    ds = _fetch(display, root / folder, lambda: cls(raw_dir=str(root), **kwargs))
    return _from_dgl_graph(ds[0], display.lower(), num_classes=ds.num_classes,
                           multilabel=multilabel)


def load_reddit(root: str | os.PathLike | None = None, self_loop: bool = False,
                verbose: bool = False) -> NodeClassificationDataset:
    """Reddit (232,965 posts, 602 features, 41 classes; ~114M edges), via ``dgl.data``.

    Downloaded on first use (about 1.3 GB from data.dgl.ai) into ``root/reddit``; ``root``
    defaults to :func:`default_root`. The graph is symmetric. Raises
    :class:`DatasetDownloadError` (a ``RuntimeError``) when the download fails.

    Examples
    --------
    >>> ds = load_reddit()  # doctest: +SKIP
    >>> ds.num_classes  # doctest: +SKIP
    41
    """
    folder = "reddit_self_loop" if self_loop else "reddit"
    return _dgl_loader("RedditDataset", "Reddit", folder, root, False, self_loop=self_loop,
                       verbose=verbose)


def load_flickr(root: str | os.PathLike | None = None,
                verbose: bool = False) -> NodeClassificationDataset:
    """Flickr (89,250 images, 500 features, 7 classes), via ``dgl.data``.

    Downloaded on first use into ``root/flickr`` (``root`` defaults to
    :func:`default_root`); raises :class:`DatasetDownloadError` when that fails.

    Examples
    --------
    >>> load_flickr().num_classes  # doctest: +SKIP
    7
    """
    return _dgl_loader("FlickrDataset", "Flickr", "flickr", root, False, verbose=verbose)


def load_yelp(root: str | os.PathLike | None = None,
              verbose: bool = False) -> NodeClassificationDataset:
    """Yelp (716,847 users, 300 features, 100 labels, multi-label), via ``dgl.data``.

    Labels are a float32 0/1 matrix. Downloaded on first use into ``root/yelp`` (``root``
    defaults to :func:`default_root`); raises :class:`DatasetDownloadError` when that fails.

    Examples
    --------
    >>> load_yelp().multilabel  # doctest: +SKIP
    True
    """
    return _dgl_loader("YelpDataset", "Yelp", "yelp", root, True, verbose=verbose)


def load_ppi(root: str | os.PathLike | None = None,
             verbose: bool = False) -> NodeClassificationDataset:
    """PPI (24 protein graphs, 56,944 nodes, 50 features, 121 labels), via ``dgl.data``.

    The 20 training, 2 validation and 2 test graphs are merged into one graph whose masks
    mark the nodes of each part (see :func:`_merge_ppi`); labels are a float32 0/1 matrix.
    Downloaded on first use into ``root/ppi`` (``root`` defaults to :func:`default_root`);
    raises :class:`DatasetDownloadError` when that fails.

    Examples
    --------
    >>> load_ppi()[0].num_nodes()  # doctest: +SKIP
    56944
    """
    import dgl.data

    root = _root(root)
    parts = _fetch(
        "PPI", root / "ppi",
        lambda: [_graphs(dgl.data.PPIDataset(mode=mode, raw_dir=str(root), verbose=verbose))
                 for mode in ("train", "valid", "test")],
    )
    return _merge_ppi(*parts, name="ppi")


def _graphs(ds) -> list[dgl.DGLGraph]:
    return [ds[i] for i in range(len(ds))]


def _ogb_loader(name: str, root, symmetrize: bool) -> NodeClassificationDataset:
    try:
        from ogb.nodeproppred import DglNodePropPredDataset
    except ImportError as err:
        raise ImportError(_OGB_HINT) from err
    root = _root(root)
    cache_dir = root / name.replace("-", "_")  # the folder ogb creates under root
    ds = _fetch(name, cache_dir, lambda: DglNodePropPredDataset(name=name, root=str(root)))
    graph, label = ds[0]
    return _from_ogb(graph, label, ds.get_idx_split(), name, num_classes=ds.num_classes,
                     symmetrize=symmetrize)


def load_ogbn_arxiv(root: str | os.PathLike | None = None) -> NodeClassificationDataset:
    """ogbn-arxiv (169,343 papers, 128 features, 40 classes), via ``ogb``, made symmetric.

    The citation graph is directed in OGB; reverse edges are added (duplicates merged) as
    is usual for GNN baselines. Masks follow OGB's time-based split. Downloaded on first use
    into ``root/ogbn_arxiv`` (``root`` defaults to :func:`default_root`); raises
    :class:`DatasetDownloadError` when that fails, ImportError without ``ogb``.

    Examples
    --------
    >>> load_ogbn_arxiv().num_classes  # doctest: +SKIP
    40
    """
    return _ogb_loader("ogbn-arxiv", root, symmetrize=True)


def load_ogbn_products(root: str | os.PathLike | None = None) -> NodeClassificationDataset:
    """ogbn-products (2,449,029 products, 100 features, 47 classes), via ``ogb``.

    Already symmetric in OGB. Masks follow OGB's sales-rank split. Downloaded on first use
    (about 1.4 GB; ``ogb`` asks for confirmation on a terminal) into ``root/ogbn_products``
    (``root`` defaults to :func:`default_root`); raises :class:`DatasetDownloadError` when
    that fails, ImportError without ``ogb``.

    Examples
    --------
    >>> load_ogbn_products().num_classes  # doctest: +SKIP
    47
    """
    return _ogb_loader("ogbn-products", root, symmetrize=False)
