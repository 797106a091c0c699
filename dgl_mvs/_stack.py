"""Check, once, that DGL can load with the installed torch and numpy.

The DGL 2.1.0 wheel for Python 3.11 ships native libraries built for torch 2.0.0-2.2.1,
and torch 2.2 is compiled against numpy 1.x.  Any other combination fails deep inside
``import dgl`` with a message that does not say what to install; this module turns that into
an :class:`ImportError` that names the versions.
"""
from __future__ import annotations

import importlib.metadata as metadata
import os

# The set this package pins (setup.cfg) and tests against.
SUPPORTED = {"dgl": "2.1.0", "torch": "2.2.1", "numpy": "<2", "torchdata": "0.7.1"}
_FIX = (
    "Install the supported set: pip install 'dgl==2.1.0' 'torch==2.2.1' 'numpy<2' "
    "'torchdata==0.7.1' (or reinstall dgl_mvs, which pins them)."
)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _release(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("+")[0].split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def stack_versions() -> dict[str, str | None]:
    """Return the installed versions of the packages DGL depends on."""
    return {name: _version(name) for name in ("dgl", "torch", "numpy", "torchdata")}


def check_stack() -> None:
    """Raise :class:`ImportError` naming the versions to install if DGL cannot load."""
    versions = stack_versions()
    missing = [name for name, v in versions.items() if v is None]
    if missing:
        raise ImportError(f"dgl_mvs needs {', '.join(missing)}, which is not installed. {_FIX}")
    torch_v, numpy_v = _release(versions["torch"]), _release(versions["numpy"])
    if torch_v[:2] < (2, 3) and numpy_v[0] >= 2:
        raise ImportError(
            f"numpy {versions['numpy']} is installed under torch {versions['torch']}, which "
            f"was built against numpy 1.x; install 'numpy<2'. {_FIX}"
        )
    if _release(versions["torchdata"])[:2] >= (0, 10):
        raise ImportError(
            f"torchdata {versions['torchdata']} no longer has the datapipes that "
            f"dgl {versions['dgl']} imports; install 'torchdata==0.7.1'. {_FIX}"
        )
    os.environ.setdefault("DGLBACKEND", "pytorch")
    # `import dgl` imports ogb when it is installed, and ogb asks PyPI for a newer version of
    # itself in a background thread: no network at run time.
    os.environ.setdefault("OUTDATED_IGNORE", "1")
    try:
        import dgl  # noqa: F401
    except Exception as err:  # DGL raises FileNotFoundError/OSError/ImportError here
        raise ImportError(
            f"DGL {versions['dgl']} cannot load with torch {versions['torch']} "
            f"(its native libraries exist for torch 2.0.0-2.2.1 only): {err}. {_FIX}"
        ) from err
