import json
import pickle

import pytest
import torch
import yaml

import hrm
from hrm.checkpoint import save_model_checkpoint
from hrm.errors import CheckpointError, ConfigError

from .helpers import tiny_batch, tiny_model

# all_config.yaml as the original writes it (yaml.dump of its pydantic config: sorted keys, its names only).
ORIGINAL_CONFIG = """\
arch:
  H_cycles: 2
  H_layers: 1
  L_cycles: 2
  L_layers: 1
  expansion: 2
  forward_dtype: float32
  halt_exploration_prob: 0.1
  halt_max_steps: 4
  hidden_size: 32
  loss:
    loss_type: stablemax_cross_entropy
    name: losses@ACTLossHead
  name: hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1
  num_heads: 4
  pos_encodings: {pos}
  puzzle_emb_ndim: 32
beta1: 0.9
beta2: 0.95
checkpoint_every_eval: true
checkpoint_path: checkpoints/Tiny ACT-torch/HierarchicalReasoningModel_ACTV1 calm-owl
data_path: {data_path}
epochs: 10
eval_interval: 5
eval_save_outputs: []
global_batch_size: 4
lr: 0.0001
lr_min_ratio: 1.0
lr_warmup_steps: 2
project_name: Tiny ACT-torch
puzzle_emb_lr: 0.01
puzzle_emb_weight_decay: 0.1
run_name: HierarchicalReasoningModel_ACTV1 calm-owl
seed: 0
weight_decay: 0.1
"""


def write_metadata(folder, seq_len=12, vocab_size=7, num_ids=5):
    for split in ("train", "test"):
        (folder / split).mkdir(parents=True, exist_ok=True)
        (folder / split / "dataset.json").write_text(
            json.dumps(
                dict(
                    pad_id=0,
                    ignore_label_id=0,
                    blank_identifier_id=0,
                    vocab_size=vocab_size,
                    seq_len=seq_len,
                    num_puzzle_identifiers=num_ids,
                    total_groups=3,
                    mean_puzzle_examples=1.0,
                    sets=["all"],
                )
            )
        )
    return folder


def original_checkpoint(tmp_path, model, pos="rope", step=7, compiled=True, data_path=None):
    """A checkpoint folder in the original's layout, from `model`'s weights."""
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    prefix = "_orig_mod." if compiled else ""
    torch.save({prefix + k: v for k, v in model.state_dict().items()}, run / f"step_{step}")
    data_path = data_path or write_metadata(tmp_path / "data")
    (run / "all_config.yaml").write_text(ORIGINAL_CONFIG.format(pos=pos, data_path=data_path))
    return run


def outputs_of(model, batch):
    model.eval()
    carry = model.initial_carry(batch)
    results = []
    for _ in range(2):
        carry, loss, _, out, _ = model(carry=carry, batch=batch, return_keys=["logits", "q_halt_logits"])
        results.append((loss, out["logits"], out["q_halt_logits"], carry.inner_carry.z_H))
    return results


def assert_same_outputs(a, b):
    for xs, ys in zip(a, b):
        for x, y in zip(xs, ys):
            torch.testing.assert_close(x, y)


@pytest.mark.parametrize("pos", ["rope", "learned"])
def test_original_layout_loads_with_compile_prefix(tmp_path, pos):
    model, _ = tiny_model(pos_encodings=pos, halt_exploration_prob=0.1)
    run = original_checkpoint(tmp_path, model, pos=pos)
    loaded, config = hrm.load_model(run / "step_7")
    assert config.arch.name == "hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1"
    assert not loaded.training
    batch = tiny_batch()
    assert_same_outputs(outputs_of(loaded, batch), outputs_of(model, batch))


def test_directory_means_latest_step(tmp_path, caplog):
    model, _ = tiny_model()
    run = original_checkpoint(tmp_path, model, step=3)
    other, _ = tiny_model()
    torch.save(other.state_dict(), run / "step_12")
    torch.save(model.state_dict(), run / "step_9")
    with caplog.at_level("DEBUG"):  # the CLIs name the chosen file once their checks pass
        loaded, _ = hrm.load_model(run)
    assert "step_12" in caplog.text
    torch.testing.assert_close(
        loaded.state_dict()["model.inner.lm_head.weight"], other.state_dict()["model.inner.lm_head.weight"]
    )


def test_round_trip_of_our_checkpoint_and_keys_match_the_original_names(tmp_path):
    model, cfg = tiny_model()
    cfg = cfg.model_copy(update={"data_path": str(write_metadata(tmp_path / "data"))})
    path = save_model_checkpoint(model, cfg, tmp_path / "ckpt", step=5)
    assert path.name == "step_5" and (tmp_path / "ckpt" / "all_config.yaml").is_file()
    raw = torch.load(path, weights_only=True)
    # As the original's compiled training writes it: every key prefixed by torch.compile's wrapper.
    assert set(raw) == {f"_orig_mod.{key}" for key in model.state_dict()}
    assert "_orig_mod.model.inner.H_level.layers.0.self_attn.qkv_proj.weight" in raw
    assert "_orig_mod.model.inner.puzzle_emb.weights" in raw and "_orig_mod.model.inner.L_init" in raw
    # The original's evaluate.py compiles the model before loading (its default path): the keys fit strictly.
    compiled = torch.compile(tiny_model()[0])
    compiled.load_state_dict(raw, strict=True)
    for key, value in model.state_dict().items():
        assert torch.equal(compiled.state_dict()[f"_orig_mod.{key}"], value), key
    # The written config is readable as the original reads it (plain YAML, its key names).
    written = yaml.safe_load((tmp_path / "ckpt" / "all_config.yaml").read_text())
    assert written["arch"]["name"] == "hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1"
    assert written["arch"]["loss"]["name"] == "losses@ACTLossHead"
    loaded, loaded_cfg = hrm.load_model(path)
    assert loaded_cfg == cfg
    batch = tiny_batch()
    assert_same_outputs(outputs_of(loaded, batch), outputs_of(model, batch))
    assert not list((tmp_path / "ckpt").glob("*.tmp"))


def test_overrides_apply_before_building(tmp_path):
    model, _ = tiny_model()
    run = original_checkpoint(tmp_path, model)
    loaded, cfg = hrm.load_model(run / "step_7", overrides=["arch.halt_max_steps=9", "+seed=3"])
    assert loaded.model.config.halt_max_steps == 9 and cfg.seed == 3
    with pytest.raises(ConfigError, match="arch.halt_max_step"):
        hrm.load_model(run / "step_7", overrides=["arch.halt_max_step=9"])


def test_sizes_from_weights_when_the_dataset_is_absent(tmp_path):
    model, _ = tiny_model(pos_encodings="learned")
    run = original_checkpoint(tmp_path, model, pos="learned", data_path=tmp_path / "nowhere")
    loaded, _ = hrm.load_model(run / "step_7")
    assert loaded.model.config.seq_len == 12 and loaded.model.config.num_puzzle_identifiers == 5

    model, _ = tiny_model(pos_encodings="rope")
    run = original_checkpoint(tmp_path, model, pos="rope", data_path=tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="data_path="):
        hrm.load_model(run / "step_7")
    loaded, _ = hrm.load_model(run / "step_7", overrides=[f"data_path={write_metadata(tmp_path / 'd2')}"])


def test_clear_errors(tmp_path):
    model, _ = tiny_model()
    with pytest.raises(CheckpointError, match="does not exist"):
        hrm.load_model(tmp_path / "missing" / "step_1")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no step_N"):
        hrm.load_model(tmp_path / "empty")

    run = original_checkpoint(tmp_path, model)
    (run / "all_config.yaml").rename(run / "moved.yaml")
    with pytest.raises(CheckpointError, match="all_config.yaml is missing"):
        hrm.load_model(run / "step_7")
    (run / "all_config.yaml").write_text("arch: [unclosed")
    with pytest.raises(CheckpointError, match="not valid YAML"):
        hrm.load_model(run / "step_7")
    text = (run / "moved.yaml").read_text()
    (run / "all_config.yaml").write_text(
        text.replace("hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1", "hrm.nope@Nope")
    )
    with pytest.raises(ConfigError, match="unknown"):
        hrm.load_model(run / "step_7")

    # Wrong vocabulary: the dataset says 9 tokens, the weights have 7.
    (run / "all_config.yaml").write_text(text)
    write_metadata(tmp_path / "data", vocab_size=9)
    with pytest.raises(CheckpointError) as err:
        hrm.load_model(run / "step_7")
    assert "model.inner.embed_tokens.embedding_weight" in str(err.value)
    assert "(7, 32)" in str(err.value) and "(9, 32)" in str(err.value)
    write_metadata(tmp_path / "data")

    torch.save({"model.inner.lm_head.weight": torch.zeros(7, 32)}, run / "step_7")
    with pytest.raises(CheckpointError, match="lacks"):
        hrm.load_model(run / "step_7")


def test_checkpoints_are_loaded_as_data_not_code(tmp_path):
    model, _ = tiny_model()
    run = original_checkpoint(tmp_path, model)

    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    (run / "step_7").write_bytes(pickle.dumps({"x": Evil()}, protocol=2))
    with pytest.raises(CheckpointError, match="cannot read"):
        hrm.load_model(run / "step_7")
