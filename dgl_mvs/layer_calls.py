"""Reading and rewriting the (graph, input) of a ``dgl.nn`` layer call inside a forward hook.

``dgl.nn`` layers are called as ``layer(graph, feat, ...)``, and sometimes with keywords
(``layer(graph=block, feat=h)``); the hooks of :class:`dgl_mvs.History` and
:class:`dgl_mvs.OneHopSampler` must see and replace the input either way.
"""
from __future__ import annotations

from typing import Any

#: Keyword names that dgl.nn layers give their graph and their node input.
_GRAPH_NAMES = ("graph", "g", "block")
_INPUT_NAMES = ("feat", "h", "x", "inputs", "feats")


def graph_and_input(args: tuple, kwargs: dict) -> tuple[Any, Any, str | int | None]:
    """``(graph, input, where)``: ``where`` is the positional index or the keyword of the input."""
    graph = args[0] if args else next((kwargs[n] for n in _GRAPH_NAMES if n in kwargs), None)
    if len(args) >= 2:
        return graph, args[1], 1
    name = next((n for n in _INPUT_NAMES if n in kwargs), None)
    return graph, (kwargs[name] if name is not None else None), name


def with_input(args: tuple, kwargs: dict, where: str | int, value: Any) -> tuple[tuple, dict]:
    """The call's ``(args, kwargs)`` with the input at ``where`` replaced by ``value``."""
    if isinstance(where, int):
        return (*args[:where], value, *args[where + 1:]), kwargs
    kwargs = dict(kwargs)
    kwargs[where] = value
    return args, kwargs


def with_graph(args: tuple, kwargs: dict, value: Any) -> tuple[tuple, dict]:
    """The call's ``(args, kwargs)`` with the graph (first argument or keyword) replaced."""
    if args:
        return (value, *args[1:]), kwargs
    name = next((n for n in _GRAPH_NAMES if n in kwargs), None)
    if name is None:
        return args, kwargs
    kwargs = dict(kwargs)
    kwargs[name] = value
    return args, kwargs
