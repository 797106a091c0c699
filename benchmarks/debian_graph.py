"""The Debian package graph: a real, sparse-with-hubs graph built offline from the apt index.

    python benchmarks/debian_graph.py                  # build or load data/debian.bin, stats
    python benchmarks/debian_graph.py --rebuild        # rebuild from `apt-cache dumpavail`
    python benchmarks/debian_graph.py --packages FILE  # from a Packages text file instead

Needs ``apt-get update`` once (as root) so that ``apt-cache dumpavail`` prints every package's
stanza.  The graph:

* **Nodes**: one per package name (its newest version when a name appears several times).
* **Edges**: undirected, from ``Depends``, ``Pre-Depends``, ``Recommends`` and ``Suggests``.
  Each alternative of ``a | b`` counts; version constraints ``(>= 1.0)``, architecture
  qualifiers ``:any`` and restrictions ``[amd64]`` / ``<!nocheck>`` are stripped; names that
  are no package of the index (virtual packages, packages of other archives) are dropped.
  Both directions are stored, without self loops or duplicates.
* **Labels**: ``Section`` without its archive area (``contrib/``, ``non-free/``, ...);
  sections with at least ``min_class_size`` packages are classes ``0 .. C-1`` in sorted order,
  the others get ``-1`` and stay outside the split.
* **Features**: the words of ``Description`` only (lowercased ``[a-z0-9]+`` tokens), hashed
  into ``feat_dim`` buckets with a sign hash, weighted ``log(1 + count) * idf`` and
  L2-normalised per row.  Never the package name, ``Source``, ``Maintainer``, ``Section`` or
  ``Tag``: ``lib*``, ``python3-*`` and ``role::shared-lib`` give the section away.
* **Split**: per class, a seeded permutation into train/val/test (50/25/25 by default).

The built graph is cached with ``dgl.save_graphs`` (``data/debian.bin``, with the package
names and the build parameters in ``data/debian.json``) and loaded from there next time, so
that results stay comparable after the apt index changes; ``--rebuild`` rebuilds it.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import subprocess
import sys
import zlib
from collections import Counter
from pathlib import Path
from typing import Iterable

import dgl
import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = ROOT / "data" / "debian.bin"
APT_SOURCE = "apt-cache dumpavail"
RELATION_FIELDS = ("Depends", "Pre-Depends", "Recommends", "Suggests")
#: Build parameters; a cache built with other values is rebuilt.
DEFAULTS = dict(feat_dim=512, min_class_size=50, split=(0.5, 0.25, 0.25), seed=0)
_TOKEN = re.compile(r"[a-z0-9]+")
_RESTRICTIONS = re.compile(r"\([^)]*\)|\[[^\]]*\]|<[^>]*>")


# ------------------------------------------------------------------------- parsing
def parse_stanzas(text: str) -> list[dict[str, str]]:
    """The stanzas of a Packages text (RFC 822 style), continuation lines joined with ``\\n``.

    Raises ValueError for a continuation line before any field.
    """
    stanzas, current, last = [], {}, None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            if current:
                stanzas.append(current)
            current, last = {}, None
        elif line[0] in " \t":
            if last is None:
                raise ValueError(f"line {number}: continuation line outside a field: {line!r}")
            current[last] += "\n" + line.strip()
        else:
            name, sep, value = line.partition(":")
            if not sep:
                raise ValueError(f"line {number}: expected 'Field: value', got {line!r}")
            last = name.strip()
            current[last] = value.strip()
    if current:
        stanzas.append(current)
    return stanzas


def relation_names(value: str) -> list[str]:
    """Package names of a relation field: every alternative, without versions or qualifiers.

    >>> relation_names("libc6 (>= 2.34), python3:any | python3-minimal, foo [amd64] <!nocheck>")
    ['libc6', 'python3', 'python3-minimal', 'foo']
    """
    names = []
    for alternative in re.split(r"[,|]", _RESTRICTIONS.sub(" ", value)):
        name = alternative.strip().split(":")[0].strip()
        if name:
            names.append(name.split()[0])
    return names


def _version_key_part(part: str) -> list:
    """dpkg's ordering of an upstream version or revision: alternate non-digit/digit runs."""
    def char_order(c: str) -> int:
        if c == "~":
            return -1
        if c.isalpha():
            return ord(c)
        return ord(c) + 256

    key = []
    while part:
        letters = re.match(r"[^0-9]*", part).group(0)
        part = part[len(letters):]
        digits = re.match(r"[0-9]*", part).group(0)
        part = part[len(digits):]
        # A run's end sorts after "~" and before anything else: terminate with 0.
        key.append([char_order(c) for c in letters] + [0])
        key.append(int(digits) if digits else 0)
    key.append([0])  # the end: after "~", before any other letter
    return key


def version_key(version: str) -> tuple:
    """A sort key of a Debian version ``[epoch:]upstream[-revision]`` in dpkg's order.

    >>> version_key("1.0~rc1") < version_key("1.0") < version_key("1.0-1") < version_key("1:0.1")
    True
    """
    version = version.strip()
    epoch, _, rest = version.partition(":") if ":" in version else ("0", "", version)
    upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "0")
    return (int(epoch or 0), _version_key_part(upstream), _version_key_part(revision))


def newest_stanzas(stanzas: Iterable[dict[str, str]]) -> dict[str, dict[str, str]]:
    """One stanza per package name, its newest version (the first one on ties)."""
    newest: dict[str, dict[str, str]] = {}
    for stanza in stanzas:
        name = stanza.get("Package")
        if not name:
            continue
        old = newest.get(name)
        if old is None or version_key(stanza.get("Version", "0")) > \
                version_key(old.get("Version", "0")):
            newest[name] = stanza
    return newest


def section_of(stanza: dict[str, str]) -> str | None:
    """``Section`` without its archive area prefix (``contrib/net`` is ``net``)."""
    section = stanza.get("Section", "").strip()
    return section.rsplit("/", 1)[-1] or None


def description_tokens(stanza: dict[str, str]) -> list[str]:
    """Lowercased word tokens of ``Description`` (synopsis and long text, not ``.`` lines)."""
    return _TOKEN.findall(stanza.get("Description", "").lower())


# ------------------------------------------------------------------------- building
def _bucket(token: str, dim: int) -> tuple[int, float]:
    """(bucket, sign) of a token: a stable hash (crc32), not Python's salted ``hash``."""
    h = zlib.crc32(token.encode("utf-8"))
    return h % dim, (1.0 if (h >> 31) & 1 else -1.0)


def hashed_features(token_lists: list[list[str]], dim: int) -> torch.Tensor:
    """``log(1 + count) * idf`` of each token, hashed with signs into ``dim`` columns, L2 rows."""
    n = len(token_lists)
    counts = [Counter(tokens) for tokens in token_lists]
    df = Counter(token for c in counts for token in c)
    idf = {token: math.log((1 + n) / (1 + k)) + 1.0 for token, k in df.items()}
    buckets = {token: _bucket(token, dim) for token in df}
    rows, cols, vals = [], [], []
    for i, c in enumerate(counts):
        for token, k in c.items():
            col, sign = buckets[token]
            rows.append(i)
            cols.append(col)
            vals.append(sign * math.log1p(k) * idf[token])
    x = torch.zeros(n, dim)
    if rows:
        x.index_put_((torch.tensor(rows), torch.tensor(cols)), torch.tensor(vals), accumulate=True)
    return torch.nn.functional.normalize(x, dim=1)


def stratified_split(labels: torch.Tensor, fractions=(0.5, 0.25, 0.25), seed: int = 0):
    """Boolean train/val/test masks: per class ``>= 0``, a seeded permutation cut by fractions."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"split fractions must be 3 non-negative numbers summing to 1, "
                         f"got {fractions}")
    gen = torch.Generator().manual_seed(seed)
    masks = [torch.zeros(labels.numel(), dtype=torch.bool) for _ in range(3)]
    for c in torch.unique(labels[labels >= 0]).tolist():
        nodes = torch.nonzero(labels == c).squeeze(1)
        nodes = nodes[torch.randperm(nodes.numel(), generator=gen)]
        n_train = round(fractions[0] * nodes.numel())
        n_val = round(fractions[1] * nodes.numel())
        masks[0][nodes[:n_train]] = True
        masks[1][nodes[n_train:n_train + n_val]] = True
        masks[2][nodes[n_train + n_val:]] = True
    return masks


def build_graph(text: str, feat_dim: int = 512, min_class_size: int = 50,
                split=(0.5, 0.25, 0.25), seed: int = 0) -> tuple[dgl.DGLGraph, list, list]:
    """The package graph of a Packages text: ``(graph, package names, class names)``.

    ``graph.ndata``: ``feat`` (float, ``feat_dim``), ``label`` (int64, -1 outside the
    classes), ``train_mask`` / ``val_mask`` / ``test_mask``.  Node ``i`` is ``names[i]``
    (sorted by name).
    """
    packages = newest_stanzas(parse_stanzas(text))
    if not packages:
        raise ValueError("no package stanza (a 'Package:' field) in the input")
    names = sorted(packages)
    index = {name: i for i, name in enumerate(names)}
    src, dst = [], []
    for name in names:
        stanza, i = packages[name], index[name]
        for field in RELATION_FIELDS:
            for target in relation_names(stanza.get(field, "")):
                j = index.get(target)
                if j is not None and j != i:
                    src.append(i)
                    dst.append(j)
    src_t, dst_t = torch.tensor(src, dtype=torch.int64), torch.tensor(dst, dtype=torch.int64)
    lo, hi = torch.minimum(src_t, dst_t), torch.maximum(src_t, dst_t)
    pairs = torch.unique(lo * len(names) + hi)
    lo, hi = pairs // len(names), pairs % len(names)
    g = dgl.graph((torch.cat([lo, hi]), torch.cat([hi, lo])), num_nodes=len(names))
    sections = [section_of(packages[name]) for name in names]
    sizes = Counter(s for s in sections if s is not None)
    classes = sorted(s for s, k in sizes.items() if k >= min_class_size)
    class_index = {s: c for c, s in enumerate(classes)}
    labels = torch.tensor([class_index.get(s, -1) for s in sections], dtype=torch.int64)
    g.ndata["label"] = labels
    g.ndata["feat"] = hashed_features([description_tokens(packages[n]) for n in names], feat_dim)
    for key, mask in zip(("train_mask", "val_mask", "test_mask"),
                         stratified_split(labels, split, seed)):
        g.ndata[key] = mask
    return g, names, classes


# ------------------------------------------------------------------------- loading
def apt_packages_text() -> str:
    """``apt-cache dumpavail``: every available package's stanza (needs ``apt-get update``)."""
    try:
        out = subprocess.run(["apt-cache", "dumpavail"], check=True, capture_output=True,
                             text=True).stdout
    except FileNotFoundError:
        raise RuntimeError("apt-cache is not installed: build the Debian graph on a Debian or "
                           "Ubuntu machine, or give a Packages file with --packages") from None
    if "Package:" not in out:
        raise RuntimeError("apt-cache dumpavail printed no package: run `apt-get update` "
                           "(as root) first")
    return out


def load(packages: str | Path | None = None, cache: str | Path | None = DEFAULT_CACHE,
         rebuild: bool = False, verbose: bool = False, **params) -> tuple[dgl.DGLGraph, dict]:
    """The Debian graph and its metadata (``names``, ``classes``, ``source``, parameters).

    From ``cache`` when it exists and was built with the same parameters from the same source
    (a ``packages`` file with the same contents, or the apt index, whatever it holds now);
    otherwise built from ``packages`` (a Packages text file) or from ``apt-cache dumpavail``,
    then saved to ``cache`` (``None``: no cache).
    """
    unknown = set(params) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown Debian graph parameters {sorted(unknown)}; known: "
                         f"{sorted(DEFAULTS)}")
    params = {**DEFAULTS, **params}
    params["split"] = list(params["split"])
    text = Path(packages).read_text() if packages is not None else None
    digest = hashlib.sha256(text.encode()).hexdigest() if text is not None else None
    cache = Path(cache) if cache is not None else None
    meta_path = cache.with_suffix(".json") if cache is not None else None
    if cache is not None and cache.exists() and meta_path.exists() and not rebuild:
        meta = json.loads(meta_path.read_text())
        same_source = meta["source_sha256"] == digest if digest is not None \
            else meta["source"] == APT_SOURCE  # the apt index as it was when cached
        if meta["params"] == params and same_source:
            graphs, _ = dgl.load_graphs(str(cache))
            if verbose:
                print(f"loaded {cache} (built from {meta['source']})", flush=True)
            return graphs[0], meta
    source = str(packages) if packages is not None else APT_SOURCE
    if text is None:
        text = apt_packages_text()
        digest = hashlib.sha256(text.encode()).hexdigest()
    g, names, classes = build_graph(text, params["feat_dim"], params["min_class_size"],
                                    tuple(params["split"]), params["seed"])
    meta = {"source": source, "source_sha256": digest, "params": params, "names": names,
            "classes": classes}
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        dgl.save_graphs(str(cache), [g])
        meta_path.write_text(json.dumps(meta))
        if verbose:
            print(f"built from {source}, saved to {cache}", flush=True)
    return g, meta


def statistics(g: dgl.DGLGraph, meta: dict) -> dict:
    """Size, degrees (undirected: in-degree), hub, classes and split sizes of the graph."""
    deg = g.in_degrees()
    hub = int(torch.argmax(deg))
    labelled = g.ndata["label"] >= 0
    return {
        "nodes": g.num_nodes(),
        "undirected_edges": g.num_edges() // 2,
        "mean_degree": float(deg.float().mean()),
        "median_degree": float(deg.float().median()),
        "max_degree": int(deg[hub]),
        "max_degree_package": meta["names"][hub],
        "isolated_nodes": int((deg == 0).sum()),
        "classes": len(meta["classes"]),
        "labelled_nodes": int(labelled.sum()),
        "feature_dim": int(g.ndata["feat"].shape[1]),
        "train / val / test": [int(g.ndata[k].sum()) for k in ("train_mask", "val_mask",
                                                               "test_mask")],
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--packages", default=None, help="a Packages text file (default: apt)")
    p.add_argument("--cache", default=str(DEFAULT_CACHE))
    p.add_argument("--rebuild", action="store_true")
    p.add_argument("--feat-dim", type=int, default=DEFAULTS["feat_dim"])
    p.add_argument("--min-class-size", type=int, default=DEFAULTS["min_class_size"])
    args = p.parse_args(argv)
    g, meta = load(args.packages, args.cache, args.rebuild, verbose=True,
                   feat_dim=args.feat_dim, min_class_size=args.min_class_size)
    for key, value in statistics(g, meta).items():
        print(f"{key:20s} {value}")


if __name__ == "__main__":
    sys.exit(main())
