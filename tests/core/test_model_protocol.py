"""The recursive-model protocol: registry names, no configuration <-> registry import cycle, model-specific sizes.

What every model must do is tested over the registry in test_model_contract.py; this file keeps what is
particular to the models of the originals (their names, their puzzle-position rules, TRM's FLOPs)."""

import subprocess
import sys

import pytest
import torch

from hrm.config import validate_config
from hrm.models.act import ACTModel
from hrm.models.registry import MODELS, architectures, build_model, puzzle_positions, seq_len_from_state
from hrm.training.flops import training_flops_per_example

# The originals' `arch.name` strings (so their all_config.yaml files resolve) and the puzzle positions each
# model prepends by default for a 32-wide puzzle embedding at hidden_size 32 (HRM's rule: as many as the width
# needs; TRM's `puzzle_emb_len` field: 16).
ORIGINAL_POSITIONS = {
    "hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1": 1,
    "hrm.transformer_baseline@TransformerBaselineACT": 1,
    "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1": 16,
    "recursive_reasoning.trm_singlez@TinyRecursiveReasoningModel_ACTV1": 16,
    "urm.urm@URM": 1,
}
COMMON = dict(hidden_size=32, num_heads=4, expansion=2, puzzle_emb_ndim=32, forward_dtype="float32", halt_max_steps=2)


def test_every_architecture_registers_its_original_names():
    assert set(ORIGINAL_POSITIONS) <= set(MODELS)
    for cls in architectures():
        assert cls.names and all(MODELS[name] is cls for name in cls.names)


def test_a_taken_model_name_is_a_clear_error():
    taken = architectures()[0].names[0]
    with pytest.raises(ValueError, match="already registered"):
        type("Clash", (ACTModel,), {"names": (taken,), "__module__": __name__})
    assert MODELS[taken].__name__ != "Clash"


def test_registry_does_not_import_the_training_configuration():
    code = "import sys, hrm.models.registry; print('hrm.config' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("name", list(ORIGINAL_POSITIONS))
def test_the_originals_puzzle_positions(name):
    fields = {key: value for key, value in MODELS[name].small_fields.items() if key != "puzzle_emb_len"}
    cfg = validate_config({"arch": {"name": name, **COMMON, **fields}})
    model = build_model(cfg.arch, batch_size=2, seq_len=9, vocab_size=5, num_puzzle_identifiers=3)
    assert model.model.puzzle_emb_len == puzzle_positions(cfg.arch) == ORIGINAL_POSITIONS[name]


def test_trm_flops_count_the_whole_last_cycle():
    """TRM: H_cycles * (L_cycles + 1) network passes forward, the last L_cycles + 1 of them also backward."""
    base = {
        "name": "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1",
        **COMMON,
        "L_layers": 1,
        "mlp_t": True,
        "pos_encodings": "none",
        "puzzle_emb_len": 1,
    }

    def flops(**arch):
        cfg = validate_config({"arch": {**base, **arch}})
        return training_flops_per_example(
            build_model(cfg.arch, batch_size=1, seq_len=9, vocab_size=5, num_puzzle_identifiers=1)
        )

    one_pass = flops(H_cycles=2, L_cycles=1) - flops(H_cycles=1, L_cycles=1)  # one more no-grad cycle = 2 passes
    assert flops(H_cycles=1, L_cycles=2) - flops(H_cycles=1, L_cycles=1) == pytest.approx(one_pass / 2 * 3)


def test_seq_len_from_weights_is_asked_of_the_model():
    cfg = validate_config(
        {
            "arch": {
                "name": "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1",
                **COMMON,
                "mlp_t": True,
                "pos_encodings": "none",
                "puzzle_emb_len": 3,
                "L_layers": 1,
            }
        }
    )
    state = build_model(cfg.arch, batch_size=1, seq_len=9, vocab_size=5, num_puzzle_identifiers=1).state_dict()
    assert seq_len_from_state(cfg.arch, state) == 9
    hrm_cfg = validate_config({"arch": {**COMMON, "pos_encodings": "learned", "puzzle_emb_ndim": 40}})
    hrm_state = build_model(hrm_cfg.arch, batch_size=1, seq_len=7, vocab_size=5, num_puzzle_identifiers=1).state_dict()
    assert seq_len_from_state(hrm_cfg.arch, hrm_state) == 7
    assert seq_len_from_state(validate_config({"arch": COMMON}).arch, {"x": torch.zeros(1)}) is None
