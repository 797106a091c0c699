"""The Debian package graph builder (benchmarks/debian_graph.py) on a small Packages text."""
import re
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import debian_graph  # noqa: E402

# Every feature of the parser in a few stanzas:
# * alternatives, version constraints, :any qualifiers, [arch] / <profile> restrictions;
# * a package with no relation and no Section, one depending on an unknown (virtual) package;
# * two versions of `libfoo1`: the newest in dpkg's order is 1.10~rc1 (10 > 2), which depends
#   on `app`; 1.2-1's relation to `base` is dropped with it;
# * section prefixes contrib/ and non-free/;
# * a self dependency and a duplicate relation (Depends and Recommends on the same package).
PACKAGES = """\
Package: app
Version: 1.0
Section: utils
Depends: libfoo1 (>= 1.0), python3:any | python3-minimal, virtual-thing
Recommends: helper [amd64] <!nocheck>, libfoo1
Suggests: app, doc-pkg
Description: A tool for counting things
 It counts things. Many things.
 .
 Counting is fun.

Package: libfoo1
Version: 1.10~rc1
Section: libs
Depends: app
Description: old version

Package: libfoo1
Version: 1.2-1
Section: libs
Pre-Depends: base
Description: shared library for foo

Package: python3
Version: 3.11
Section: python
Description: interactive high-level object-oriented language

Package: python3-minimal
Version: 3.11
Section: contrib/python
Description: minimal subset of the Python language

Package: helper
Version: 2
Section: non-free/utils
Description: helps the tool

Package: doc-pkg
Version: 1
Section: doc
Description: documentation for the tool

Package: base
Version: 1
Description: base system
"""


@pytest.fixture
def built(tmp_path):
    path = tmp_path / "Packages"
    path.write_text(PACKAGES)
    g, meta = debian_graph.load(path, cache=None, min_class_size=2, feat_dim=64,
                                split=(0.5, 0.0, 0.5))
    return g, meta


def _edges(g, names):
    src, dst = g.edges()
    return {(names[s], names[d]) for s, d in zip(src.tolist(), dst.tolist())}


def test_relations_stripped():
    assert debian_graph.relation_names(
        "a (>= 1:2.0~), b:any | c (<< 3) [amd64 i386], d <!nocheck>, e:native"
    ) == ["a", "b", "c", "d", "e"]
    assert debian_graph.relation_names("") == []


def test_newest_version_kept():
    key = debian_graph.version_key
    assert key("1.10~rc1") > key("1.2-1")  # 10 > 2 numerically
    assert key("1.0~rc1") < key("1.0") < key("1.0-1") < key("1.0.1") < key("1:0.1")
    stanzas = debian_graph.parse_stanzas(PACKAGES)
    newest = debian_graph.newest_stanzas(stanzas)
    assert newest["libfoo1"]["Version"] == "1.10~rc1"


def test_exact_edges_and_labels(built):
    g, meta = built
    names = meta["names"]
    assert names == sorted(["app", "libfoo1", "python3", "python3-minimal", "helper",
                            "doc-pkg", "base"])
    # libfoo1's newest version is 1.10~rc1 (depends on app, not on base); app's self
    # Suggests and its relation to the unknown virtual-thing are dropped.
    undirected = {("app", "libfoo1"), ("app", "python3"), ("app", "python3-minimal"),
                  ("app", "helper"), ("app", "doc-pkg")}
    expected = undirected | {(b, a) for a, b in undirected}
    assert _edges(g, names) == expected
    assert g.num_edges() == len(expected)  # no duplicates
    # Sections without prefix; classes of >= 2 packages: python (python3, contrib/python3-
    # minimal) and utils (app, non-free/helper); libs, doc and the missing Section: -1.
    assert meta["classes"] == ["python", "utils"]
    label = dict(zip(names, g.ndata["label"].tolist()))
    assert label == {"app": 1, "helper": 1, "python3": 0, "python3-minimal": 0,
                     "libfoo1": -1, "doc-pkg": -1, "base": -1}


def test_features_from_descriptions_only(built, tmp_path):
    g, meta = built
    x = g.ndata["feat"]
    assert x.shape == (7, 64)
    assert torch.allclose(x.norm(dim=1), torch.ones(7), atol=1e-6)
    # Rename every package (and its relations), change Section, Source and Maintainer: the
    # features of each package stay the same.
    mapping = {"python3-minimal": "zz-min", "python3": "zz-py", "libfoo1": "qq1",
               "helper": "aa-help", "doc-pkg": "mm-doc", "app": "ee-app", "base": "bb-base"}
    pattern = re.compile(r"(?<![\w.+-])(" + "|".join(map(re.escape, mapping)) + r")(?![\w.+-])")
    lines = []
    for line in PACKAGES.splitlines():
        if not line.startswith(("Description", " ")):  # names everywhere but descriptions
            line = pattern.sub(lambda m: mapping[m.group(1)], line)
            line = line.replace("Section: libs", "Section: python\nMaintainer: X <x@y>\n"
                                "Source: lib")
        lines.append(line)
    path = tmp_path / "Renamed"
    path.write_text("\n".join(lines) + "\n")
    g2, meta2 = debian_graph.load(path, cache=None, min_class_size=2, feat_dim=64,
                                  split=(0.5, 0.0, 0.5))
    assert meta2["names"] == sorted(mapping.values())
    assert len(_edges(g2, meta2["names"])) == g.num_edges()  # the renaming kept the relations
    order = [meta2["names"].index(mapping[n]) for n in meta["names"]]
    assert torch.equal(g2.ndata["feat"][order], x)
    # And the words do matter: a description change changes the row.
    tokens = debian_graph.description_tokens({"Description": "A tool.\n .\n Counting, fun!"})
    assert tokens == ["a", "tool", "counting", "fun"]


def test_split_stratified_and_seeded():
    labels = torch.tensor([0] * 40 + [1] * 20 + [-1] * 7)
    train, val, test = debian_graph.stratified_split(labels, (0.5, 0.25, 0.25), seed=3)
    assert not (train & val).any() and not (train & test).any() and not (val & test).any()
    assert not (train | val | test)[labels < 0].any()
    assert bool((train | val | test)[labels >= 0].all())
    for c, n in ((0, 40), (1, 20)):
        assert [int(m[labels == c].sum()) for m in (train, val, test)] == \
            [n // 2, n // 4, n - n // 2 - n // 4]
    again = debian_graph.stratified_split(labels, (0.5, 0.25, 0.25), seed=3)
    other = debian_graph.stratified_split(labels, (0.5, 0.25, 0.25), seed=4)
    assert all(torch.equal(a, b) for a, b in zip((train, val, test), again))
    assert not torch.equal(train, other[0])
    with pytest.raises(ValueError, match="summing to 1"):
        debian_graph.stratified_split(labels, (0.5, 0.5, 0.5))


def test_cache_round_trip(tmp_path):
    path = tmp_path / "Packages"
    path.write_text(PACKAGES)
    cache = tmp_path / "data" / "debian.bin"
    g, meta = debian_graph.load(path, cache=cache, min_class_size=2)
    assert cache.exists() and cache.with_suffix(".json").exists()
    g2, meta2 = debian_graph.load(path, cache=cache, min_class_size=2)
    assert meta2["names"] == meta["names"]
    for key in ("feat", "label", "train_mask"):
        assert torch.equal(g2.ndata[key], g.ndata[key])
    # Other parameters, or another file, rebuild instead of loading a stale graph.
    g3, _ = debian_graph.load(path, cache=cache, min_class_size=3)
    assert int((g3.ndata["label"] >= 0).sum()) == 0
    path.write_text(PACKAGES.replace("Section: doc", "Section: utils"))
    g4, meta4 = debian_graph.load(path, cache=cache, min_class_size=2)
    assert meta4["classes"] == ["python", "utils"]
    assert int((g4.ndata["label"] == 1).sum()) == 3


def test_cache_of_a_file_is_not_the_apt_graph(tmp_path, monkeypatch):
    path = tmp_path / "Packages"
    path.write_text(PACKAGES)
    cache = tmp_path / "debian.bin"
    debian_graph.load(path, cache=cache, min_class_size=2)
    apt_text = PACKAGES + "\nPackage: extra\nVersion: 1\nSection: doc\nDescription: more\n"
    monkeypatch.setattr(debian_graph, "apt_packages_text", lambda: apt_text)
    g, meta = debian_graph.load(cache=cache, min_class_size=2)
    assert meta["source"] == "apt-cache dumpavail" and "extra" in meta["names"]
    # The apt graph is cached now, and loaded without asking apt again.
    monkeypatch.setattr(debian_graph, "apt_packages_text", lambda: "")
    g2, meta2 = debian_graph.load(cache=cache, min_class_size=2)
    assert meta2["names"] == meta["names"]


def test_empty_input_refused(tmp_path):
    path = tmp_path / "Packages"
    path.write_text("Foo: bar\n")
    with pytest.raises(ValueError, match="no package stanza"):
        debian_graph.load(path, cache=None)
    with pytest.raises(ValueError, match="unknown Debian graph parameters"):
        debian_graph.load(path, cache=None, dims=3)
