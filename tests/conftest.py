import os

os.environ.setdefault("DGLBACKEND", "pytorch")
os.environ.setdefault("OUTDATED_IGNORE", "1")

import dgl  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import dgl_mvs  # noqa: E402,F401


def random_graph(num_nodes: int = 400, num_edges: int = 3000, feat_dim: int = 12,
                 num_classes: int = 5, seed: int = 0, idtype=torch.int64) -> dgl.DGLGraph:
    """A simple random graph with heterogeneous degrees, features and labels."""
    gen = torch.Generator().manual_seed(seed)
    # Skewed endpoints give a spread of degrees (hubs and leaves), as in real graphs.
    weights = torch.rand(num_nodes, generator=gen) ** 3 + 0.01
    src = torch.multinomial(weights, num_edges, replacement=True, generator=gen)
    dst = torch.randint(0, num_nodes, (num_edges,), generator=gen)
    g = dgl.to_simple(dgl.graph((src, dst), num_nodes=num_nodes))
    g = dgl.remove_self_loop(g).astype(idtype)
    g.ndata["feat"] = torch.randn(num_nodes, feat_dim, generator=gen)
    g.ndata["label"] = torch.randint(0, num_classes, (num_nodes,), generator=gen)
    return g


@pytest.fixture
def graph():
    return random_graph()
