"""The model package. Importing it imports every module of the package, so each architecture defined in
one (a subclass of `hrm.models.act.ACTModel` with `names`) registers itself; adding a model is adding a
module here, with no list to edit. Modules whose name starts with `_` are skipped.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
