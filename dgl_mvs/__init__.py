"""dgl_mvs: Minimal Variance Sampling (Cong et al., KDD 2020) for DGL's data loading."""
from ._stack import check_stack, stack_versions

check_stack()

__version__ = "0.1.0"

__all__ = ["__version__", "check_stack", "stack_versions"]
