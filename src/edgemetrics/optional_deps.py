"""Lazy imports of host frameworks, with one clear error when one is missing.

Integrations import their framework only when they are set up, so ``import
edgemetrics.integrations.flask`` never fails; setting one up without its framework raises
:class:`MissingDependency` naming the package and the extra to install.

>>> require("json", extra="core", integration="json").__name__
'json'
>>> try:
...     require("no_such_framework_xyz", extra="nothing", integration="demo")
... except MissingDependency as exc:
...     print(exc)  # doctest: +NORMALIZE_WHITESPACE
edgemetrics.integrations.demo needs the 'no_such_framework_xyz' package:
pip install "edgemetrics[nothing]"
"""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingDependency(ImportError):
    """An integration was set up but its framework is not installed."""


def require(module: str, *, extra: str, integration: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependency` telling how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        raise MissingDependency(
            f"edgemetrics.integrations.{integration} needs the {top!r} package: "
            f'pip install "edgemetrics[{extra}]"'
        ) from exc
