"""Datasets for ``dgl_mvs``: one shape (:class:`NodeClassificationDataset`) for all of them.

``load_dataset(name, **kwargs)`` dispatches to a loader; the keyword arguments go to it.

========================  ===========================================================
name                      loader
========================  ===========================================================
``"cora"``                :func:`load_cora` (offline, from the ``graphdatascience`` wheel)
``"synthetic"``           :func:`synthetic_graph` (DC-SBM generator, any scale)
``"reddit"``              :func:`load_reddit` (download, ``dgl.data``)
``"ppi"``                 :func:`load_ppi` (download, multi-label)
``"flickr"``              :func:`load_flickr` (download)
``"yelp"``                :func:`load_yelp` (download, multi-label)
``"ogbn-arxiv"``          :func:`load_ogbn_arxiv` (download, needs ``ogb``)
``"ogbn-products"``       :func:`load_ogbn_products` (download, needs ``ogb``)
========================  ===========================================================

Examples
--------
>>> from dgl_mvs.data import load_dataset
>>> ds = load_dataset("synthetic", num_nodes=1_000, seed=0)
>>> g = ds[0]
>>> sorted(g.ndata.keys())
['feat', 'label', 'test_mask', 'train_mask', 'val_mask']
"""
from __future__ import annotations

from collections.abc import Callable

from .cora import CORA_CLASSES, load_cora
from .dataset import NodeClassificationDataset, is_symmetric, validate_graph
from .downloadable import (
    DatasetDownloadError,
    default_root,
    load_flickr,
    load_ogbn_arxiv,
    load_ogbn_products,
    load_ppi,
    load_reddit,
    load_yelp,
)
from .synthetic import synthetic_graph

_LOADERS: dict[str, Callable[..., NodeClassificationDataset]] = {
    "cora": load_cora,
    "synthetic": synthetic_graph,
    "reddit": load_reddit,
    "ppi": load_ppi,
    "flickr": load_flickr,
    "yelp": load_yelp,
    "ogbn-arxiv": load_ogbn_arxiv,
    "ogbn-products": load_ogbn_products,
}
#: Names :func:`load_dataset` accepts.
DATASETS: tuple[str, ...] = tuple(_LOADERS)


def load_dataset(name: str, **kwargs) -> NodeClassificationDataset:
    """Load a dataset by name; ``kwargs`` go to its loader.

    Parameters
    ----------
    name : str
        One of :data:`DATASETS` (case-insensitive; ``_`` may stand for ``-``).
    **kwargs
        Loader options, e.g. ``seed`` for ``"cora"``, ``num_nodes`` for ``"synthetic"``,
        ``root`` (cache folder) for the downloadable datasets.

    Returns
    -------
    NodeClassificationDataset

    Raises
    ------
    ValueError
        For an unknown name; the message lists the known ones.

    Examples
    --------
    >>> load_dataset("cora").num_classes
    7
    >>> load_dataset("imagenet")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown dataset 'imagenet'; known datasets: cora, synthetic, reddit, ...
    """
    key = name.strip().lower().replace("_", "-")
    if key not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    return _LOADERS[key](**kwargs)


__all__ = [
    "CORA_CLASSES",
    "DATASETS",
    "DatasetDownloadError",
    "NodeClassificationDataset",
    "default_root",
    "is_symmetric",
    "load_cora",
    "load_dataset",
    "load_flickr",
    "load_ogbn_arxiv",
    "load_ogbn_products",
    "load_ppi",
    "load_reddit",
    "load_yelp",
    "synthetic_graph",
    "validate_graph",
]
