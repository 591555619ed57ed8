"""Checkpoint evaluation: the shared evaluation pass (`runner`, also used by the trainer), `evaluate.py`'s
command line (`cli`), adaptive halting with slot refill and the halt_max_steps sweep (`act_refill`), ARC
voting and pass@K (`arc`), Augmented-HRM perturbations, ensembles and selections (`augmented`), halting
calibration (`calibration`), per-example metrics (`metrics`), the test-split reader (`data`) and the
printed/JSON report (`report`)."""
