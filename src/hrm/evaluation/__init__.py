"""Checkpoint evaluation: the shared evaluation pass (`runner`, also used by the trainer) and `evaluate.py`
(`cli`), whose pieces each do one job: its keys (`options`), the checkpoints and test split it scores, read
once and checked to fit (`loading`; rows read by `data`), the per-rank compute of each protocol
(one module and entry point each: `plain`, `sweep`, `augmented` for Augmented HRM,
over the `EvalSetup` of `setup`; adaptive halting with slot refill in `act_refill`, identifier ablations in
`identifiers`, batch sizing in `batching`), ARC voting and pass@K (`arc`), per-example metrics (`metrics`), halting calibration
(`calibration`) and the printed/JSON report (`report`)."""
