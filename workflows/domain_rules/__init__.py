"""Domain rules (年度考核, 职级晋升, 下沉一线 …), one module per process.

Each module registers its rules with `workflows.rules.register`; every module in this
package is imported when the registry is first used, so adding a rule is adding a module.
"""

from __future__ import annotations

import importlib
import pkgutil


def load_all() -> None:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
