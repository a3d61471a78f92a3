"""Run a command of this checkout without installing it: ``python scripts/checkout.py NAME ...``.

Why: a lent GPU machine's Python may not be writable, and ``pip install -e .`` would write into
it (and needs a build backend it may lack). ``pyproject.toml`` maps ``cflnet_sdk.training`` to
``training/`` and so on, so putting the checkout on ``sys.path`` is not enough: a meta path
finder reads that mapping and serves the packages from their folders, ahead of any installed
copy. NAME is one of the project's console scripts (``cflnet``, ``cflnet-export``), or ``-m
MODULE`` (e.g. ``-m pytest``). Processes those start import whatever their Python has installed.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import runpy
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def pyproject() -> dict[str, Any]:
    try:
        import tomllib
    except ImportError:  # Python 3.10 (JetPack 6)
        import tomli as tomllib  # type: ignore[no-redef]
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


class CheckoutFinder(importlib.abc.MetaPathFinder):
    """Finds the packages of ``[tool.setuptools.package-dir]`` in this checkout's folders."""

    def __init__(self, folders: dict[str, Path]) -> None:
        self.folders = folders

    def find_spec(self, fullname: str, path: Any = None, target: Any = None
                  ) -> importlib.machinery.ModuleSpec | None:
        folder = self.folders.get(fullname)
        if folder is None:
            return None
        return importlib.util.spec_from_file_location(
            fullname, folder / "__init__.py", submodule_search_locations=[str(folder)])


def install() -> None:
    """Make ``import cflnet_sdk`` (and its mapped subpackages) load this checkout."""
    if any(isinstance(finder, CheckoutFinder) for finder in sys.meta_path):
        return
    mapping = pyproject()["tool"]["setuptools"]["package-dir"]
    sys.meta_path.insert(0, CheckoutFinder({name: ROOT / folder
                                            for name, folder in mapping.items()}))
    sys.path.insert(0, str(ROOT))  # tests/ and top-level helpers, as pytest sees them


def main(argv: list[str]) -> None:
    install()
    if argv[:1] == ["-m"] and len(argv) > 1:
        sys.argv = argv[1:]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        return
    scripts = pyproject()["project"]["scripts"]
    if not argv or argv[0] not in scripts:
        sys.exit(f"usage: python scripts/checkout.py {{{'|'.join(scripts)}|-m MODULE}} [ARGS]")
    module, function = scripts[argv[0]].split(":")
    sys.argv = argv
    sys.exit(getattr(importlib.import_module(module), function)())


if __name__ == "__main__":
    main(sys.argv[1:])
