"""Checkpoint evaluation: the shared evaluation pass (`runner`, also used by the trainer) and `evaluate.py`
(`cli`), whose pieces each do one job: its keys (`options`), the checkpoints and test split it scores, read
once and checked to fit (`loading`; rows read by `data`), the per-rank compute of each protocol
(`protocols`, with adaptive halting and the halt_max_steps sweep in `act_refill`, Augmented-HRM
perturbations, ensembles and selections in `augmented`, identifier ablations in `identifiers`, batch sizing
in `batching`), ARC voting and pass@K (`arc`), per-example metrics (`metrics`), halting calibration
(`calibration`) and the printed/JSON report (`report`)."""
