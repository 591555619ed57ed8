"""The optimisers of a training run, one module each, and the registry of optimiser sets.

- `adam_atan2`: Adam-atan2 (HRM, TRM, URM's default), set `adam_atan2`.
- `sign_sgd`: sign-SGD on the puzzle-embedding rows of the batch (every set, when the model has the table).
- `muon`: Muon on every 2-D weight with an AdamW group for the rest (URM's `use_muon=True`), set `muon`.
- `adamw`: the AdamW rule of that group.
"""

from hrm.training.optimizers.adam_atan2 import AdamATan2, make_adam_atan2
from hrm.training.optimizers.registry import optimizer_set, optimizer_set_names, register_optimizer_set
from hrm.training.optimizers.sign_sgd import SignSGDSparse

__all__ = [
    "AdamATan2",
    "SignSGDSparse",
    "make_adam_atan2",
    "optimizer_set",
    "optimizer_set_names",
    "register_optimizer_set",
]
