"""Dropout-aware control variates (VR-GCN's CVD) inside stock models: the dropout's input, found.

A stock DGL model applies dropout between its layers itself
(``h = self.dropout(F.relu(layer(block, h)))``), so the hook of a control-variate layer gets
``h`` only.  VR-GCN's CVD estimator also needs ``mu``, the input of that dropout: with
``ratio = d_v / s_v`` it estimates ``sum_u c_uv h_u`` by

    S_v + ratio * sum_{drawn u} c_uv (mu_u - hbar_u)
        + sqrt(ratio) * sum_{drawn u} c_uv (h_u - mu_u)

which is unbiased over the neighbour draw and the dropout mask (``E[h_u | mu_u] = mu_u``) and
whose dropout noise has the variance of the exact layer's (``ratio`` draws of variance
``1 / ratio`` each), instead of ``ratio`` times it as with ``ratio * sum c_uv (h_u - hbar_u)``.

:func:`dropout_hook` is a forward hook on the model's ``torch.nn.Dropout`` modules: in
training mode it tags the tensor the dropout returns with the tensor it was given (and both
tensors' version counters).  :func:`dropout_input` gives ``mu`` back for exactly that tensor,
unmodified; anything else (functional dropout, a tensor computed from the dropout's output,
an in-place change after it, ``inplace=True`` dropout, eval mode) gives ``None``, and the
control-variate layer falls back to the estimator without the dropout split, which is
unbiased as well.  The hook is one module-level function (stateless, pickled by reference,
installed once per module) and carries ``_dgl_mvs_hook``, so :func:`dgl_mvs.remove_hooks`
finds it.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from .hooks import _POST_DICTS, _drop

__all__ = ["dropout_hook", "dropout_input", "dropout_modules"]

#: Attribute of a dropout's output tensor: ``(input, input._version, output._version)``.
_TAG = "_dgl_mvs_dropout_input"


def dropout_hook(module: nn.Module, args: tuple, kwargs: dict, output) -> None:
    """Tag ``output`` with the dropout's input (training mode; never changes the output)."""
    if not module.training or not torch.is_tensor(output):
        return None
    mu = args[0] if args else kwargs.get("input")
    # inplace=True (or p=0 in some versions) returns the input itself: mu is gone or equal.
    if not torch.is_tensor(mu) or mu is output or mu.shape != output.shape:
        return None
    setattr(output, _TAG, (mu, mu._version, output._version))
    return None


dropout_hook._dgl_mvs_hook = True


def dropout_input(h: Tensor) -> Tensor | None:
    """``mu`` if ``h`` is a tagged dropout output, unchanged since, as is ``mu``; else None."""
    tag = getattr(h, _TAG, None)
    if tag is None:
        return None
    mu, mu_version, version = tag
    if h._version != version or mu._version != mu_version:
        return None
    return mu


def dropout_modules(model: nn.Module, layers: Sequence[nn.Module] = ()) -> list[nn.Module]:
    """The ``torch.nn.Dropout`` modules of ``model`` outside its GNN ``layers`` (once each).

    Only that class itself (a subclass may compute something else); dropouts inside the
    layers (``feat_drop``) act on the layer's own rows, which no control-variate hook reads.
    """
    inside = {id(m) for layer in layers if isinstance(layer, nn.Module) for m in layer.modules()}
    return [m for m in model.modules() if type(m) is nn.Dropout and id(m) not in inside]


def has_dropout_hook(module: nn.Module) -> bool:
    """Whether :func:`dropout_hook` is a forward hook of ``module``."""
    return any(h is dropout_hook for h in module._forward_hooks.values())


def install_dropout_hook(module: nn.Module) -> bool:
    """Register :func:`dropout_hook` on ``module`` unless it has it; True if new."""
    if has_dropout_hook(module):
        return False
    module.register_forward_hook(dropout_hook, with_kwargs=True)
    return True


def remove_dropout_hook(module: nn.Module) -> int:
    """Remove :func:`dropout_hook` from ``module``; returns how many were removed."""
    return _drop(module, _POST_DICTS, lambda h: h is not dropout_hook)
