"""Layers for dgl_mvs blocks: control-variate versions of the linear aggregators."""
from .control_variate import ControlVariate
from .conv import CVGraphConv, CVSAGEConv, aggregate

__all__ = ["ControlVariate", "CVGraphConv", "CVSAGEConv", "aggregate"]
