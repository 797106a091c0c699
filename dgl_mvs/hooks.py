"""The forward hooks that dgl_mvs installs on a model's layers: once each, owned, removable.

:class:`dgl_mvs.OneHopSampler` (and :class:`dgl_mvs.distgraph.DistOneHopSampler`) install one
module-level function, :func:`dgl_mvs.onehop.onehop_hook`, whose work is determined by the
block it is called with (and, with control-variate layers, the forward hook
:func:`dgl_mvs.dropout.dropout_hook` on the model's ``nn.Dropout`` modules);
:class:`dgl_mvs.History` installs hooks bound to itself.  Every one
of them carries the attribute ``_dgl_mvs_hook``, by which :func:`remove_hooks` finds them.
Hooked models pickle (``torch.save(model)``, DataLoader workers started with ``spawn``): the
one-hop hook is pickled by reference, a History's hooks as inert placeholders (a History
holds the graph's tables, which do not travel with the model).
"""
from __future__ import annotations

from typing import Callable

from torch import nn

__all__ = ["remove_hooks"]

# torch keeps a hook in several dicts keyed by the same handle id (kwargs, always-called flags).
_PRE_DICTS = ("_forward_pre_hooks", "_forward_pre_hooks_with_kwargs")
_POST_DICTS = ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called")


def is_dgl_mvs_hook(hook: object) -> bool:
    """Whether ``hook`` was installed by dgl_mvs."""
    return bool(getattr(hook, "_dgl_mvs_hook", False))


def pre_hooks(module: nn.Module) -> list:
    """The forward pre-hooks of ``module``, in call order."""
    return list(module._forward_pre_hooks.values())


def has_pre_hook(module: nn.Module, hook: Callable) -> bool:
    """Whether ``hook`` (the object itself) is a forward pre-hook of ``module``."""
    return any(h is hook for h in module._forward_pre_hooks.values())


def install_pre_hook(module: nn.Module, hook: Callable) -> bool:
    """Register ``hook`` (called with kwargs) unless ``module`` has it already; True if new."""
    if has_pre_hook(module, hook):
        return False
    module.register_forward_pre_hook(hook, with_kwargs=True)
    return True


def _drop(module: nn.Module, dicts: tuple, keep: Callable[[object], bool]) -> int:
    hooks = getattr(module, dicts[0])
    ids = [i for i, h in hooks.items() if not keep(h)]
    for name in dicts:
        table = getattr(module, name, None)
        if table is not None:
            for i in ids:
                table.pop(i, None)
    return len(ids)


def remove_pre_hook(module: nn.Module, hook: Callable) -> int:
    """Remove ``hook`` from ``module``'s forward pre-hooks; returns how many were removed."""
    return _drop(module, _PRE_DICTS, lambda h: h is not hook)


def remove_module_hooks(module: nn.Module, which: Callable[[object], bool]) -> None:
    """Remove the forward pre-hooks and forward hooks of ``module`` for which ``which`` holds."""
    _drop(module, _PRE_DICTS, lambda h: not which(h))
    _drop(module, _POST_DICTS, lambda h: not which(h))


def remove_hooks(model: nn.Module) -> int:
    """Remove every hook that dgl_mvs installed on ``model`` and its submodules.

    One-hop samplers whose layers lose their hooks refuse to build blocks afterwards (call
    their ``attach()`` to use them again); a :class:`dgl_mvs.History` attached to these
    layers is detached.  Use it when you are done with dgl_mvs's samplers on a model (before
    exporting it, say); samplers already copied into running DataLoader workers are not
    reached, so stop iterating first.  Returns the number of hooks removed.

    Examples
    --------
    >>> import dgl, torch
    >>> from dgl.nn import GraphConv
    >>> import dgl_mvs
    >>> g = dgl.rand_graph(50, 300)
    >>> g.ndata["feat"] = torch.randn(50, 4)
    >>> layers = torch.nn.ModuleList([GraphConv(4, 8), GraphConv(8, 2)])
    >>> sampler = dgl_mvs.OneHopSampler(g, layers, prefetch_node_feats=["feat"])
    >>> dgl_mvs.remove_hooks(layers)
    2
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"remove_hooks takes an nn.Module, got {type(model).__name__}")
    modules = list(model.modules())
    before = sum(is_dgl_mvs_hook(h) for m in modules
                 for h in pre_hooks(m) + list(m._forward_hooks.values()))
    histories = {id(h.history): h.history for m in modules for h in pre_hooks(m)
                 if is_dgl_mvs_hook(h) and getattr(h, "history", None) is not None}
    for history in histories.values():
        history.detach()
    for module in modules:
        remove_module_hooks(module, is_dgl_mvs_hook)
    return before
