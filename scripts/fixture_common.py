"""Helpers every fixture script shares that must work WITHOUT importing torch
(importing it takes a second or more, which the up-to-date path of a fixture
script must not pay). fixture_io.py holds the helpers that need torch.
"""
import hashlib
import json
import importlib.metadata
import importlib.util
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def torch_version_without_import():
    """torch.__version__ read from torch/version.py. None when it cannot be read."""
    try:
        spec = importlib.util.find_spec("torch")
        if spec is None or spec.origin is None:
            return None
        with open(os.path.join(os.path.dirname(spec.origin), "version.py"), encoding="utf-8") as f:
            for line in f:
                if line.startswith("__version__"):
                    return line.partition("=")[2].strip().strip("'\"")
    except (AttributeError, ImportError, OSError, TypeError, ValueError):
        pass
    return None


def quick_source_version(script_name):
    """fixture_io.source_version(script_name), computed the same way without torch.
    Callers check that the two agree (if not, every run remakes, slow but correct)."""
    torch_version = torch_version_without_import()
    if torch_version is None:
        return None
    h = hashlib.sha256()
    for name in (script_name, "fixture_io.py"):
        with open(os.path.join(HERE, name), "rb") as f:
            h.update(f.read())
    h.update(torch_version.encode())
    try:  # as fixture_io.torchvision_version
        h.update(importlib.metadata.version("torchvision").encode())
    except importlib.metadata.PackageNotFoundError:
        h.update(b"none")
    return h.hexdigest()


def outdir_arg(argv, *default):
    """OUTDIR from the command line, else the repository path `default`."""
    return argv[1] if len(argv) > 1 else os.path.join(os.path.dirname(HERE), *default)


def remove_stale(outdir, written):
    """Drop .pt/.bin files in outdir that this run did not write (an older version's)."""
    for name in set(os.listdir(outdir)) - set(written):
        if name.endswith((".pt", ".bin")):
            os.remove(os.path.join(outdir, name))


def drop_manifest(outdir):
    """Removes OUTDIR/manifest.json and returns its path: until a new one is written
    last, the folder reads as "not made", so an interrupted run is redone."""
    path = os.path.join(outdir, "manifest.json")
    if os.path.exists(path):
        os.remove(path)
    return path


def write_json_atomic(path, obj):
    """Write JSON via a temp file + os.replace so readers never see half a file."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False, allow_nan=False)
        f.write("\n")
    os.replace(tmp, path)
