"""History embeddings kept as graph node data, and the hook that exchanges them with a model.

For each hidden layer ``l`` (``1 <= l < num_layers``) the history of the layer's *input* lives in
``g.ndata["mvs_hist_{l}"]`` (``N x width``), with the :attr:`History.clock` of each node's last
write in ``g.ndata["mvs_hist_clock_{l}"]`` (-1 for never).  Layer 0's input is the raw features,
exact for every node, so it has no history.
"""
from __future__ import annotations

import math
import numbers
import warnings
import weakref
from typing import Callable, Sequence

import dgl
import torch
from dgl import DGLGraph
from torch import Tensor, nn

from . import keys
from .blocks import check_graph, history_blocks
from .distributed import gather_rows, process_group_place
from .hooks import pre_hooks, remove_module_hooks
from .layer_calls import graph_and_input, with_input

NID = dgl.NID

__all__ = ["History"]


class _StopForward(Exception):
    """Raised inside a forward pass once a refresh pass has what it needs."""


class _PreHook:
    """A History's forward pre-hook on one layer (an object, so that it can be found)."""

    _dgl_mvs_hook = True

    def __init__(self, history: "History", layer: int):
        self.history, self.layer = history, layer

    def __call__(self, module, args, kwargs):
        return self.history._pre_hook(self.layer, module, args, kwargs)

    def __reduce__(self):
        # A saved model does not carry the graph's histories: it gets a placeholder.
        return _placeholder, ("pre",)

    def __deepcopy__(self, memo):  # a copied model keeps exchanging with the same History
        return self


class _PostHook(_PreHook):
    """A History's forward hook: puts back DGL's zero in-degree check after the call."""

    def __call__(self, module, args, output):
        self.history._restore_flag(module, self.layer)

    def __reduce__(self):
        return _placeholder, ("post",)


def _saved_pre_hook(module, args, kwargs):
    """Stands for a History's hook in a saved model: refuses history blocks, passes the rest."""
    block, _, where = graph_and_input(args, kwargs)
    if where is not None and isinstance(block, DGLGraph) and block.is_block \
            and keys.FRESH in block.srcdata:
        raise RuntimeError(
            f"{type(module).__name__} was saved (or pickled) with a dgl_mvs.History attached, "
            "and the histories did not come with it: attach a History to the model's layers "
            "again, dgl_mvs.History(g, widths).attach(model.layers)"
        )
    return None


def _saved_post_hook(module, args, output):
    return None


_saved_pre_hook._dgl_mvs_hook = True
_saved_post_hook._dgl_mvs_hook = True


def _placeholder(kind: str):
    return _saved_pre_hook if kind == "pre" else _saved_post_hook


def _drop_placeholders(module: nn.Module) -> None:
    remove_module_hooks(module, lambda h: h is _saved_pre_hook or h is _saved_post_hook)


#: Histories whose hooks are installed: samplers check that their graph has one.
_ATTACHED: "weakref.WeakSet[History]" = weakref.WeakSet()


def attached_histories(g: DGLGraph) -> list["History"]:
    """The histories of graph ``g`` whose hooks are attached to a model's layers."""
    return [h for h in list(_ATTACHED) if h.g is g and h._handles]


def _check_widths(widths) -> list[int]:
    if isinstance(widths, numbers.Integral) and not isinstance(widths, bool):
        widths = [widths]  # one hidden layer
    try:
        widths = list(widths)
    except TypeError:
        raise ValueError(
            f"widths must be the input widths of layers 1..L-1, e.g. [256] for a 2-layer "
            f"model, got {widths!r}"
        ) from None
    if any(isinstance(w, bool) or not isinstance(w, numbers.Integral) or w <= 0
           for w in widths):
        raise ValueError(f"history widths must be positive integers, got {widths}")
    return [int(w) for w in widths]


def _last_writes(state: dict, layer: int) -> object:
    """The last-write clocks of ``layer`` in a state (older states: ``mvs_hist_step_{l}``)."""
    clock_key = keys.history_clock_key(layer)
    return state[clock_key] if clock_key in state else state.get(f"mvs_hist_step_{layer}")


class History:
    """Per-layer history embeddings of a graph, exchanged with a model through forward hooks.

    After :meth:`attach`, every call of the model's ``l``-th layer (``l >= 1``) on a dgl_mvs
    block first *pushes* the rows of its input that were computed fresh (detached) into the
    history, then *pulls* the history for the other rows (the halo), so that stock ``dgl.nn``
    layers (``GraphConv``, ``SAGEConv``, ``GATConv``, ``GINConv``, ...) run on history blocks
    without changes.  Values are pulled when the layer runs, so they are the freshest ones, not
    a copy taken when the batch was sampled.  On control-variate blocks the hook also leaves
    every source node's history in ``block.srcdata["mvs_history"]`` for the layers of
    :mod:`dgl_mvs.nn`.  Blocks from other samplers and full graphs pass through untouched.

    The stored value of layer ``l`` is the input of layer ``l`` as the model computes it
    (after the previous layer's activation, and after dropout when the model applies it in
    training mode).

    Parameters
    ----------
    g : DGLGraph
        The graph the sampler draws from; histories are stored in its ``ndata`` on its device
        (keep ``g`` on the CPU to keep histories in host memory while the model runs on a GPU).
    widths : list[int]
        Input width of layers ``1 .. num_layers - 1`` (for a 2-layer model, ``[hidden]``).
    dtype : torch.dtype, default torch.float32
        Storage type of the histories.

    Examples
    --------
    >>> import dgl, torch
    >>> from dgl.nn import SAGEConv
    >>> import dgl_mvs
    >>> g = dgl.rand_graph(100, 500)
    >>> g.ndata["feat"] = torch.randn(100, 8)
    >>> layers = torch.nn.ModuleList([SAGEConv(8, 16, "mean"), SAGEConv(16, 3, "mean")])
    >>> history = dgl_mvs.History(g, widths=[16])
    >>> handles = history.attach(layers)
    >>> _, _, blocks = dgl_mvs.blocks.history_blocks(g, torch.arange(10), num_layers=2)
    >>> h = blocks[0].srcdata["feat"] if "feat" in blocks[0].srcdata else g.ndata["feat"][
    ...     blocks[0].srcdata[dgl.NID]]
    >>> for layer, block in zip(layers, blocks):
    ...     h = layer(block, h)
    >>> h.shape
    torch.Size([10, 3])
    """

    def __init__(self, g: DGLGraph, widths: Sequence[int], *, dtype: torch.dtype = torch.float32):
        self.g = check_graph(g)
        widths = _check_widths(widths)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(
                f"dtype must be a floating-point torch dtype (histories hold activations), "
                f"got {dtype!r}"
            )
        self.widths = widths
        self.num_layers = len(widths) + 1
        self.clock = 0
        # Under torch.distributed: rows pushed since the last sync(), per layer.
        self._pending: dict[int, list[Tensor]] = {}
        self._stop_layer: int | None = None
        self._handles: list = []
        self._layers: list[nn.Module] = []
        self._refuses_zero_in_degree: list[bool] = []
        self._blocks: dict[int, object] = {}
        self.dropout = 0.0
        for layer, width in enumerate(widths, start=1):
            key, clock_key = keys.history_key(layer), keys.history_clock_key(layer)
            existing = g.ndata.get(key) if key in g.ndata else None
            if existing is not None and tuple(existing.shape) != (g.num_nodes(), width):
                raise ValueError(
                    f"g.ndata[{key!r}] already holds a tensor of shape {tuple(existing.shape)}, "
                    f"which does not match width {width} of layer {layer}"
                )
            if existing is not None and existing.dtype != dtype:
                raise ValueError(
                    f"g.ndata[{key!r}] already holds {existing.dtype} histories, not {dtype}: "
                    "a second History on this graph shares them; use the same dtype, or "
                    f"delete g.ndata[{key!r}] first"
                )
            if existing is None:
                g.ndata[key] = torch.zeros(g.num_nodes(), width, dtype=dtype, device=g.device)
                g.ndata[clock_key] = torch.full(
                    (g.num_nodes(),), -1, dtype=torch.int64, device=g.device
                )

    # ------------------------------------------------------------------ storage
    def _table(self, layer: int) -> Tensor:
        if not 1 <= layer < self.num_layers:
            raise ValueError(f"layer {layer} has no history (valid: 1..{self.num_layers - 1})")
        return self.g.ndata[keys.history_key(layer)]

    def pull(self, layer: int, nodes: Tensor) -> Tensor:
        """History of the input of ``layer`` for ``nodes``."""
        return self._table(layer)[nodes.to(self.g.device).long()]

    def push(self, layer: int, nodes: Tensor, values: Tensor) -> None:
        """Write ``values`` (detached) as the history of ``layer`` for ``nodes``."""
        table = self._table(layer)
        if values.dim() != 2 or values.shape[1] != table.shape[1]:
            got = values.shape[1] if values.dim() == 2 else tuple(values.shape[1:])
            raise ValueError(
                f"layer {layer} input has width {got} but its history has width "
                f"{table.shape[1]}; construct History with the model's hidden widths"
            )
        values = values.detach()
        if not bool(torch.isfinite(values).all()):
            bad = int((~torch.isfinite(values)).any(1).sum())
            raise ValueError(
                f"the input of layer {layer} has {bad} row(s) with NaN or infinite values; "
                "nothing was stored in its history (a diverging step? lower the learning rate "
                "or skip the step before calling the model again)"
            )
        idx = nodes.to(self.g.device).long()
        table[idx] = values.to(device=table.device, dtype=table.dtype)
        self.g.ndata[keys.history_clock_key(layer)][idx] = self.clock
        if process_group_place()[1] > 1:
            self._pending.setdefault(layer, []).append(idx)

    def sync(self) -> None:
        """Send the rows pushed since the last call to every rank, and write theirs.

        A collective under ``torch.distributed`` (every rank calls it, in the same order of
        histories; :meth:`dgl_mvs.MVSSampler.update_scores` does after each step): per layer,
        each rank's pushed node IDs with their last-write clocks and values are all-gathered
        and written in rank order, so the histories stay identical on every rank (a node that
        several ranks pushed in one step keeps the highest rank's value).  Cost per step and
        layer: the pushed rows (``B`` with history blocks) times ``width`` values, from every
        rank.  Without a process group of several ranks it does nothing.
        """
        if process_group_place()[1] == 1:
            self._pending = {}
            return
        pending, self._pending = self._pending, {}
        for layer in range(1, self.num_layers):
            table = self._table(layer)
            clocks = self.g.ndata[keys.history_clock_key(layer)]
            parts = pending.get(layer, [])
            idx = torch.unique(torch.cat(parts)) if parts else \
                torch.zeros(0, dtype=torch.int64, device=table.device)
            ids = gather_rows(torch.stack([idx, clocks[idx]], 1).cpu())
            values = gather_rows(table[idx].cpu())
            # The last row of each node wins (a plain index_put keeps any of the duplicates).
            unique, inverse = torch.unique(ids[:, 0], return_inverse=True)
            last = torch.full((unique.numel(),), -1, dtype=torch.int64).scatter_reduce_(
                0, inverse, torch.arange(inverse.numel()), reduce="amax")
            nodes = unique.to(table.device)
            table[nodes] = values[last].to(table.device)
            clocks[nodes] = ids[last, 1].to(clocks.device)

    def last_write(self, layer: int, nodes: Tensor) -> Tensor:
        """Clock value of the last write of each node's history of ``layer`` (-1: never)."""
        self._table(layer)
        return self.g.ndata[keys.history_clock_key(layer)][nodes.to(self.g.device).long()]

    # ------------------------------------------------------------------ exchange
    def exchange(self, block: object, h: Tensor, layer: int) -> Tensor:
        """Push the fresh rows of a layer input and fill the halo rows from history.

        This is the body of the hook installed by :meth:`attach`; a model that prefers
        explicit calls can call it between layers instead.  Returns ``h`` unchanged for full
        graphs and for blocks not built by dgl_mvs.
        """
        if not isinstance(block, DGLGraph) or not block.is_block:
            return h
        if keys.FRESH not in block.srcdata:
            return h
        if isinstance(h, tuple):
            src = self.exchange(block, h[0], layer)
            return src, src[: block.num_dst_nodes()]
        if not torch.is_tensor(h):
            raise TypeError(
                f"layer {layer} input is a {type(h).__name__}, not a tensor; features "
                "prefetched by a sampler are only loaded by dgl.dataloading.DataLoader (when "
                "calling sampler.sample() directly, index g.ndata with input_nodes instead)"
            )
        if h.shape[0] != block.num_src_nodes():
            raise ValueError(
                f"layer {layer} input has {h.shape[0]} rows but its block has "
                f"{block.num_src_nodes()} source nodes; pass the blocks of one mini-batch "
                "in order"
            )
        is_cv = keys.HISTORY_WEIGHTS in block.edata
        if layer == 0:
            # Raw features are exact for every node: their "history" is themselves.
            if is_cv:
                block.srcdata[keys.HISTORY] = h.detach()
            return h
        nodes = block.srcdata[NID]
        fresh = block.srcdata[keys.FRESH].to(h.device)
        if not is_cv and bool(fresh.all()):
            # Exact blocks (checkpoints, inference): nothing to fill, only push.  Skipping the
            # gather and the select saves two passes over a pool-sized activation.
            self.push(layer, nodes, h)
            filled = h
        else:
            # Gather before pushing: control variates need the *old* history of fresh rows.
            past = self.pull(layer, nodes).to(device=h.device, dtype=h.dtype)
            self.push(layer, nodes[fresh.to(nodes.device)], h[fresh])  # checks the width
            if is_cv:
                block.srcdata[keys.HISTORY] = past
            filled = torch.where(fresh.unsqueeze(1), h, past)
        if self._stop_layer == layer:
            raise _StopForward
        return filled

    def attach(self, layers: Sequence[nn.Module], dropout: float = 0.0) -> list:
        """Install the exchange as a forward pre-hook on each of the model's GNN layers.

        ``layers[l]`` must be the module that the model calls as ``layers[l](block, h, ...)``
        (or with keywords, ``layers[l](graph=block, feat=h)``) on ``blocks[l]``.  Layers that
        refuse zero in-degree destinations (``GraphConv``, ``GATConv``) keep refusing them,
        except for the halo rows of history blocks, which have no in-edges and whose outputs
        are replaced from history: a batch node without in-edges still raises DGL's error.
        Returns the hook handles; :meth:`detach` removes them.

        A layer exchanges with one History at a time: attaching replaces (with a warning) the
        hooks of another History attached to the same layers, e.g. one built by an earlier
        run of a notebook cell.  Tied layers (one module at two places of ``layers``) are
        refused.  A model saved with ``torch.save`` while attached keeps a placeholder hook
        in place of each History hook (the histories stay with the graph), which refuses
        history blocks until a History is attached again; ``copy.deepcopy`` keeps the
        hooks, bound to this History.

        Parameters
        ----------
        layers : list[nn.Module]
            The model's GNN layers, first layer first.
        dropout : float, default 0.0
            Dropout applied (in training mode) to the input of every hidden layer *after* the
            exchange, on any graph.  Use it instead of dropout between layers in the model:
            histories then hold clean activations, not one dropout mask frozen for many steps
            (the README's results measure the difference).
        """
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        layers = list(layers)
        if len(layers) != self.num_layers:
            raise ValueError(
                f"History was built for {self.num_layers} layers (widths {self.widths}) but "
                f"{len(layers)} layers were given"
            )
        for i, module in enumerate(layers):
            for j in range(i):
                if layers[j] is module:
                    raise ValueError(
                        f"layers {j} and {i} are one module (tied weights): a History keeps "
                        "one table per layer call and needs one module per layer. Untie them, "
                        "or use one-hop blocks (dgl_mvs.OneHopSampler), whose hooks serve "
                        "tied layers"
                    )
        self.detach()
        self._replace_previous(layers)
        self.dropout = dropout
        self._layers = layers
        self._refuses_zero_in_degree = [
            not getattr(module, "_allow_zero_in_degree", True) for module in layers
        ]
        for index, module in enumerate(layers):
            self._handles.append(
                module.register_forward_pre_hook(_PreHook(self, index), with_kwargs=True)
            )
            self._handles.append(module.register_forward_hook(_PostHook(self, index)))
        _ATTACHED.add(self)
        return list(self._handles)

    def _replace_previous(self, layers: Sequence[nn.Module]) -> None:
        """Remove another History's hooks from ``layers`` (a re-run notebook cell), saying so."""
        previous = {}
        for module in layers:
            for hook in pre_hooks(module):
                if isinstance(hook, _PreHook) and hook.history is not self:
                    previous[id(hook.history)] = hook.history
        for old in previous.values():
            warnings.warn(
                "these layers had another dgl_mvs.History attached (a re-run notebook cell?); "
                "its hooks are removed (old_history.detach()) and this History's installed: "
                "a layer exchanges with one History at a time",
                RuntimeWarning, stacklevel=3,
            )
            old.detach()
        for module in layers:  # placeholders left by a saved and loaded model
            _drop_placeholders(module)

    def detach(self) -> None:
        """Remove the hooks installed by :meth:`attach`."""
        for handle in self._handles:
            handle.remove()
        for module, refuses in zip(self._layers, self._refuses_zero_in_degree):
            if refuses:
                module._allow_zero_in_degree = False
        self._handles = []
        self._layers = []
        self._blocks = {}
        _ATTACHED.discard(self)

    def _check_zero_in_degree(self, block: DGLGraph, layer: int) -> None:
        """DGL's zero in-degree error, for the rows that are not halo rows of history blocks.

        The rows of a layer's output that count are the next layer's fresh inputs (the last
        layer's: all of its destinations); halo rows are replaced from history.
        """
        previous = self._blocks.get(layer - 1)
        if layer >= 1 and self._refuses_zero_in_degree[layer - 1] and previous is not None:
            fresh = block.srcdata[keys.FRESH].to(previous.device)
            if previous.num_dst_nodes() == fresh.numel() and bool(
                    ((previous.in_degrees() == 0) & fresh).any()):
                self._raise_zero_in_degree(layer - 1)
        last = layer == self.num_layers - 1
        if last and self._refuses_zero_in_degree[layer] and bool((block.in_degrees() == 0).any()):
            self._raise_zero_in_degree(layer)

    @staticmethod
    def _raise_zero_in_degree(layer: int) -> None:
        from dgl import DGLError

        raise DGLError(
            f"There are 0-in-degree nodes among the batch nodes that layer {layer} computes; "
            "output for those nodes will be invalid (DGL's check, kept by dgl_mvs for every "
            "node but the history blocks' halo). Adding self-loops with "
            "`g = dgl.add_self_loop(g)` resolves it; or set allow_zero_in_degree=True on the "
            "layer to accept it."
        )

    def _restore_flag(self, module: nn.Module, layer: int) -> None:
        if self._refuses_zero_in_degree and self._refuses_zero_in_degree[layer]:
            module._allow_zero_in_degree = False

    def _pre_hook(self, layer: int, module: nn.Module, args: tuple, kwargs: dict):
        block, h_in, where = graph_and_input(args, kwargs)
        if where is None:
            return None
        if layer == 0 and module.training:
            self.clock += 1
            self._blocks = {}
        ours = isinstance(block, DGLGraph) and block.is_block and keys.FRESH in block.srcdata
        if self._refuses_zero_in_degree[layer]:
            module._allow_zero_in_degree = False  # DGL's own check, unless ours below
        if ours:
            self._blocks[layer] = block
            block._mvs_exchanged = True  # MVSSampler.update_scores checks the hooks ran
            self._check_zero_in_degree(block, layer)
            if self._refuses_zero_in_degree[layer]:
                # Halo rows have no in-edges by construction; the check above covered the
                # rest.  Restored after the call by the forward hook.
                module._allow_zero_in_degree = True
        h = self.exchange(block, h_in, layer)
        if layer > 0 and self.dropout > 0 and module.training and torch.is_tensor(h):
            h = nn.functional.dropout(h, self.dropout, training=True)
        if h is h_in:
            return None
        return with_input(args, kwargs, where, h)

    # ------------------------------------------------------------------ refresh
    @torch.no_grad()
    def refresh(
        self,
        model: Callable,
        features: Tensor | str = "feat",
        nodes: Tensor | None = None,
        *,
        chunk_size: int = 4096,
        device: torch.device | str | None = None,
        edge_weight: str | None = None,
        progress: bool = False,
    ) -> Tensor:
        """Recompute every history exactly at the current weights; return the model outputs.

        Layer-wise inference over the whole graph in chunks of destination nodes on history
        blocks: pass ``l`` runs the model on each chunk until the input of layer ``l`` is
        written, so after pass ``l`` layer ``l``'s history is exact for every node, and the last
        pass returns the outputs for ``nodes`` (all nodes by default) computed from exact
        histories, which is the full-graph forward.  The model runs in eval mode (dropout
        off) and is put back in its previous mode.  Cost: ``num_layers`` passes over the
        graph, the ``l``-th evaluating the first ``l`` layers.

        Parameters
        ----------
        model : nn.Module or callable
            Called as ``model(blocks, x)``; its layers must be attached to this history.
        features : Tensor or str
            Input features for all nodes, or the ``g.ndata`` key holding them.
        nodes : Tensor, optional
            Nodes whose outputs to return (default: all).
        chunk_size : int
            Destination nodes per chunk.
        device : device, optional
            Where the model runs (default: the device of its first parameter).
        edge_weight : str, optional
            ``g.edata`` key of edge weights, copied to ``block.edata["edge_weights"]``.
        progress : bool
            Show a progress bar.
        """
        if not self._handles:
            raise RuntimeError("attach the model's layers first: history.attach(model.layers)")
        g = self.g
        if isinstance(features, str):
            if features not in g.ndata:
                raise KeyError(f"feature key {features!r} is not in g.ndata")
            features = g.ndata[features]
        # A plain function is fine too: the attached layers carry the parameters and modes.
        modules = [model] if isinstance(model, nn.Module) else self._layers
        if device is None:
            param = next((p for m in modules for p in m.parameters()), None)
            device = param.device if param is not None else torch.device("cpu")
        all_nodes = torch.arange(g.num_nodes(), device=g.device, dtype=g.idtype)
        targets = all_nodes if nodes is None else nodes.to(g.device, g.idtype)
        modes = [m.training for m in modules]
        for m in modules:
            m.eval()
        outputs = []
        try:
            for stop in list(range(1, self.num_layers)) + [None]:
                self._stop_layer = stop
                chunks = (all_nodes if stop is not None else targets).split(chunk_size)
                if progress:
                    from tqdm.auto import tqdm

                    name = f"layer {stop}" if stop is not None else "outputs"
                    chunks = tqdm(chunks, desc=f"refresh {name}", total=math.ceil(
                        (g.num_nodes() if stop is not None else targets.numel()) / chunk_size))
                for chunk in chunks:
                    input_nodes, _, blocks = history_blocks(
                        g, chunk, self.num_layers, edge_weight=edge_weight
                    )
                    blocks = [block.to(device) for block in blocks]
                    x = features[input_nodes.long().to(features.device)].to(device)
                    try:
                        out = model(blocks, x)
                    except _StopForward:
                        continue
                    outputs.append(out)
        finally:
            self._stop_layer = None
            for m, mode in zip(modules, modes):
                m.train(mode)
        return torch.cat(outputs) if outputs else torch.empty(0)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Histories, last-write records and the clock, for ``torch.save`` (CPU copies)."""
        state = {"widths": list(self.widths), "num_nodes": self.g.num_nodes(), "clock": self.clock}
        for layer in range(1, self.num_layers):
            state[keys.history_key(layer)] = self._table(layer).detach().to("cpu", copy=True)
            state[keys.history_clock_key(layer)] = self.g.ndata[
                keys.history_clock_key(layer)
            ].to("cpu", copy=True)
        return state

    def check_state_dict(self, state: dict) -> None:
        """Raise ValueError naming what differs if ``state`` does not fit (nothing changes)."""
        if not isinstance(state, dict):
            raise ValueError(f"history state must be a dict, got {type(state).__name__}")
        if state.get("num_nodes") != self.g.num_nodes():
            raise ValueError(
                f"history state is for {state.get('num_nodes')} nodes, graph has "
                f"{self.g.num_nodes()}"
            )
        if list(state.get("widths", [])) != self.widths:
            raise ValueError(
                f"history state has layer widths {state.get('widths')}, this history has "
                f"{self.widths}"
            )
        if "clock" not in state:
            raise ValueError("history state is missing 'clock'")
        n = self.g.num_nodes()
        for layer in range(1, self.num_layers):
            key, clock_key = keys.history_key(layer), keys.history_clock_key(layer)
            table, steps = state.get(key), _last_writes(state, layer)
            if not torch.is_tensor(table) or not torch.is_tensor(steps):
                raise ValueError(f"history state is missing {key!r} or {clock_key!r}")
            live = self._table(layer)
            if tuple(table.shape) != tuple(live.shape) or tuple(steps.shape) != (n,):
                raise ValueError(
                    f"history state of layer {layer} has shape {tuple(table.shape)} (last "
                    f"writes {tuple(steps.shape)}), this history has {tuple(live.shape)}"
                )
            if table.dtype != live.dtype:
                raise ValueError(
                    f"history state of layer {layer} has dtype {table.dtype}, this history "
                    f"stores {live.dtype}"
                )
            if steps.is_floating_point() or steps.dtype == torch.bool:
                raise ValueError(f"history state's {clock_key!r} must be integer clocks")

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`; refuses a mismatched graph or widths, changing nothing.

        Values are copied into the existing ``g.ndata`` tensors, on the graph's device.
        """
        self.check_state_dict(state)
        for layer in range(1, self.num_layers):
            self._table(layer).copy_(state[keys.history_key(layer)])
            self.g.ndata[keys.history_clock_key(layer)].copy_(_last_writes(state, layer))
        self.clock = int(state["clock"])
