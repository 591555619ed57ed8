"""TRM's training keys: data_paths, EMA, freeze_weights, load_checkpoint, min_eval_interval, evaluators, +run_name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from training_helpers import make_dataset, tiny_config

from hrm.checkpoint import clean_state_dict, load_model, save_model_checkpoint
from hrm.config import validate_config
from hrm.data.combined import read_splits
from hrm.data.puzzle_dataset import PuzzleDataset, PuzzleDatasetConfig
from hrm.distributed import init_distributed
from hrm.errors import DatasetError
from hrm.evaluation.cli import main as evaluate_main
from hrm.training.checkpointing import saved_steps
from hrm.training.cli import accept_plus_for_existing_keys, compose_config, to_pretrain_config
from hrm.training.ema import EMA
from hrm.training.trainer import Trainer, run_training

TRM = [
    "arch=trm",
    "arch.hidden_size=32",
    "arch.num_heads=2",
    "arch.expansion=2",
    "arch.L_layers=1",
    "arch.H_cycles=2",
    "arch.L_cycles=2",
    "arch.halt_max_steps=3",
    "arch.puzzle_emb_len=2",
    "arch.forward_dtype=float32",
]


def weights(path: Path) -> dict[str, torch.Tensor]:
    """A saved step_N without the `_orig_mod.` prefix it is written with."""
    return clean_state_dict(torch.load(path, map_location="cpu", weights_only=True))


@pytest.fixture(scope="module")
def second_dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data2") / "other", num_groups=5, seed=1)


def test_several_datasets_stack_their_identifiers(tiny_dataset, second_dataset):
    meta_a, sets_a = read_splits([tiny_dataset], "train")
    meta_b, sets_b = read_splits([second_dataset], "train")
    meta, sets = read_splits([tiny_dataset, second_dataset], "train")
    assert list(sets) == ["all0", "all1"]
    assert meta.num_puzzle_identifiers == meta_a.num_puzzle_identifiers + meta_b.num_puzzle_identifiers
    assert meta.total_groups == meta_a.total_groups + meta_b.total_groups
    # The second dataset's identifiers start after the first one's rows: no embedding row is shared.
    np.testing.assert_array_equal(
        sets["all1"].puzzle_identifiers, sets_b["all"].puzzle_identifiers + meta_a.num_puzzle_identifiers
    )
    np.testing.assert_array_equal(sets["all0"].puzzle_identifiers, sets_a["all"].puzzle_identifiers)
    assert set(sets["all0"].puzzle_identifiers.tolist()).isdisjoint(sets["all1"].puzzle_identifiers.tolist())

    dataset = PuzzleDataset(
        PuzzleDatasetConfig(
            seed=0,
            dataset_path=str(tiny_dataset),
            dataset_paths=[str(tiny_dataset), str(second_dataset)],
            global_batch_size=8,
            test_set_mode=False,
            epochs_per_iter=1,
            rank=0,
            num_replicas=1,
        )
    )
    seen = {name: set() for name in ("all0", "all1")}
    for set_name, batch, _ in dataset.iter_chunk(0):
        seen[set_name] |= set(batch["puzzle_identifiers"].tolist())
    assert seen["all1"] and min(seen["all1"]) >= meta_a.num_puzzle_identifiers


def test_datasets_that_disagree_are_a_clear_error(tiny_dataset, tmp_path):
    other = make_dataset(tmp_path / "longer", seq_len=20)
    with pytest.raises(DatasetError, match="seq_len"):
        read_splits([tiny_dataset, other], "train")


def test_training_on_two_datasets_and_the_saved_config(tiny_dataset, second_dataset, tmp_path):
    config = tiny_config(
        tiny_dataset,
        tmp_path / "run",
        *TRM,
        f"data_paths=[{tiny_dataset},{second_dataset}]",
        "epochs=2",
        "eval_interval=2",
    )
    metrics = run_training(config)
    assert {"all0/exact_accuracy", "all1/exact_accuracy"} <= set(metrics)
    saved = (tmp_path / "run" / "all_config.yaml").read_text()
    assert "data_paths:" in saved and str(second_dataset) in saved
    embedding = weights(tmp_path / "run" / f"step_{saved_steps(tmp_path / 'run')[-1]}")[
        "model.inner.puzzle_emb.weights"
    ]
    assert embedding.shape[0] == 25 + 11

    model, _ = load_model(tmp_path / "run")  # sized by the combined datasets
    assert model.model.puzzle_emb.weights.shape[0] == 25 + 11

    # evaluate.py scores the same combined test split, stacked identifiers included.
    output = tmp_path / "results.json"
    args = [f"checkpoint={tmp_path / 'run'}", f"output={output}", "save_outputs=[]", "progress=false", "device=cpu"]
    assert evaluate_main(args) == 0
    results = json.loads(output.read_text())
    assert results["data_paths"] == [str(tiny_dataset), str(second_dataset)]
    for set_name in ("all0", "all1"):
        for key in ("exact_accuracy", "accuracy", "lm_loss"):
            assert results["metrics"][set_name][key] == pytest.approx(metrics[f"{set_name}/{key}"], rel=1e-5, abs=1e-7)


def test_ema_arithmetic():
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, rate=0.9)
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    torch.testing.assert_close(ema.shadow["weight"], 0.1 * (start["weight"] + 1.0) + 0.9 * start["weight"])
    with ema.swapped_in(model):
        torch.testing.assert_close(model.weight, ema.shadow["weight"])
    torch.testing.assert_close(model.weight, start["weight"] + 1.0)  # live weights back after the block


def test_ema_weights_are_evaluated_and_saved_and_resume_is_exact(tiny_dataset, tmp_path):
    extra = ("ema=True", "ema_rate=0.5", "checkpoint_every_eval=false", "arch.halt_exploration_prob=0.5")
    run_training(tiny_config(tiny_dataset, tmp_path / "full", *extra))
    state = torch.load(tmp_path / "full" / "train_state_12" / "trainer.pt", weights_only=True)
    saved = weights(tmp_path / "full" / "step_12")
    for name, shadow in state["ema"].items():
        torch.testing.assert_close(saved[name], shadow, rtol=0, atol=0)  # step_N holds the average
    assert any(not torch.equal(state["live_parameters"][name], state["ema"][name]) for name in state["ema"])

    run_training(tiny_config(tiny_dataset, tmp_path / "split", *extra, "max_steps=4"))
    run_training(tiny_config(tiny_dataset, tmp_path / "split", *extra, "resume=auto"))
    resumed = weights(tmp_path / "split" / "step_12")
    for key, value in saved.items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=0, msg=key)
    resumed_state = torch.load(tmp_path / "split" / "train_state_12" / "trainer.pt", weights_only=True)
    for name, value in state["live_parameters"].items():
        torch.testing.assert_close(resumed_state["live_parameters"][name], value, rtol=0, atol=0)


def test_freeze_weights_trains_only_the_puzzle_embedding(tiny_dataset, tmp_path):
    config = tiny_config(tiny_dataset, tmp_path / "run", "freeze_weights=True", "epochs=2", "eval_interval=2")
    ctx = init_distributed("cpu")
    trainer = Trainer(config, ctx)
    before = {key: value.clone() for key, value in trainer.model.state_dict().items()}
    batch = next(iter(trainer.train_data.iter_chunk(0)))[1]
    trainer.train_batch(batch, 8)
    trainer.train_batch(batch, 8)
    assert all(p.grad is None and not p.requires_grad for p in trainer.model.parameters())  # no gradient computed
    after = trainer.model.state_dict()
    for key, value in before.items():
        if key.endswith("puzzle_emb.weights"):
            assert not torch.equal(after[key], value)
        else:
            assert torch.equal(after[key], value), key


def test_load_checkpoint_resets_a_differently_shaped_puzzle_embedding_to_its_mean(
    tiny_dataset, second_dataset, tmp_path
):
    source = tiny_config(second_dataset, tmp_path / "src", "epochs=2", "eval_interval=2")
    source_trainer = Trainer(source, init_distributed("cpu"))
    table = torch.randn_like(source_trainer.model.model.inner.puzzle_emb.weights)
    source_trainer.model.model.inner.puzzle_emb.weights.copy_(table)
    save_model_checkpoint(source_trainer.model, source, tmp_path / "src", step=1)
    # The checkpoint's state dict as TRM's compiled code writes it.
    state = weights(tmp_path / "src" / "step_1")
    torch.save({f"_orig_mod.{key}": value for key, value in state.items()}, tmp_path / "src" / "step_2")

    config = tiny_config(
        tiny_dataset, tmp_path / "run", f"load_checkpoint={tmp_path / 'src' / 'step_2'}", "epochs=2", "eval_interval=2"
    )
    trainer = Trainer(config, init_distributed("cpu"))
    loaded = trainer.model.state_dict()
    rows = loaded["model.inner.puzzle_emb.weights"]
    assert rows.shape[0] != table.shape[0]
    torch.testing.assert_close(rows, table.mean(0, keepdim=True).expand_as(rows))
    for key, value in state.items():
        if not key.endswith("puzzle_emb.weights"):
            torch.testing.assert_close(loaded[key], value, rtol=0, atol=0)


def test_min_eval_interval_skips_early_evaluations_and_checkpoints(tiny_dataset, tmp_path):
    run_training(tiny_config(tiny_dataset, tmp_path / "run", "min_eval_interval=1"))
    assert saved_steps(tmp_path / "run") == [12]  # chunk 0 (step 6): no evaluation, no checkpoint


def test_trms_readme_style_command_composes(tiny_dataset):
    argv = accept_plus_for_existing_keys(
        [
            "arch=trm",
            f"data_paths=[{tiny_dataset}]",
            "evaluators=[]",
            "+run_name=trm_sudoku",
            "ema=True",
            "arch.mlp_t=True",
            "arch.pos_encodings=none",
            "+experiment=quickstart",
        ]
    )
    assert "run_name=trm_sudoku" in argv and "+experiment=quickstart" in argv
    config = to_pretrain_config(compose_config([a for a in argv if "experiment" not in a]))
    assert config.run_name == "trm_sudoku" and config.data_path == str(tiny_dataset) and config.ema
    assert config.arch.name == "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1"


def test_arc_evaluator_runs_after_each_evaluation(tmp_path):
    from hrm.data.arc import build_arc

    rng = np.random.default_rng(0)
    folder = tmp_path / "raw" / "evaluation"
    folder.mkdir(parents=True)
    for task in ("aaa", "bbb"):

        def pair(h, w):
            grid = rng.integers(0, 10, (h, w))
            return {"input": grid.tolist(), "output": np.rot90(grid).tolist()}

        (folder / f"{task}.json").write_text(json.dumps({"train": [pair(3, 4), pair(2, 2)], "test": [pair(3, 5)]}))
    build_arc([str(tmp_path / "raw")], tmp_path / "arc", num_aug=2, seed=0, progress=False)
    config = tiny_config(
        tmp_path / "arc",
        tmp_path / "run",
        *TRM,
        "evaluators=[{name:arc@ARC,pass_Ks:[1,2],best_of_Ns:[10]}]",
        "epochs=1",
        "eval_interval=1",
        "global_batch_size=4",
    )
    metrics = run_training(config)
    assert set(metrics) >= {"ARC/pass@1", "ARC/pass@2", "ARC/best_of@10"}
    assert 0.0 <= metrics["ARC/pass@1"] <= metrics["ARC/pass@2"] <= 1.0

    bad = validate_config({"evaluators": [{"name": "sudoku@Nope"}]})
    with pytest.raises(Exception, match="unknown"):
        Trainer(bad.model_copy(update={"data_path": str(tmp_path / "arc")}), init_distributed("cpu"))


@pytest.mark.parametrize(
    "preset, data, extra",
    [
        (
            "trm_sudoku_extreme_mlp",
            "data/sudoku-extreme-1k-aug-1000",
            {"mlp_t": True, "pos_encodings": "none", "L_cycles": 6},
        ),
        (
            "trm_sudoku_extreme_att",
            "data/sudoku-extreme-1k-aug-1000",
            {"mlp_t": False, "pos_encodings": "rope", "L_cycles": 6},
        ),
        ("trm_maze_30x30_hard", "data/maze-30x30-hard-1k", {"L_cycles": 4}),
        ("trm_arc1", "data/arc1concept-aug-1000", {"L_cycles": 4}),
        ("trm_arc2", "data/arc2concept-aug-1000", {"L_cycles": 4}),
    ],
)
def test_trm_presets(preset, data, extra):
    config = to_pretrain_config(compose_config([f"+experiment={preset}"]))
    arch = config.arch.model_extra
    assert config.arch.name == "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1" and config.data_path == data
    assert config.ema and (arch["L_layers"], arch["H_cycles"]) == (2, 3)
    assert all(arch[key] == value for key, value in extra.items())
    assert bool(config.evaluators) == preset.startswith("trm_arc")


@pytest.mark.parametrize(
    "preset, shapes, expected",
    [
        ("trm_sudoku_extreme_mlp", dict(seq_len=81, vocab_size=11, num_puzzle_identifiers=1), 5_028_866),
        ("trm_arc1", dict(seq_len=900, vocab_size=12, num_puzzle_identifiers=1000), 6_829_058),
    ],
)
def test_trm_parameter_counts_as_trms_code_counts_them(preset, shapes, expected):
    """sum(p.numel() for p in model.parameters()): the puzzle embedding is a buffer, as in TRM's code."""
    from hrm.models.registry import build_model

    config = to_pretrain_config(compose_config([f"+experiment={preset}"]))
    with torch.device("meta"):
        model = build_model(config.arch, batch_size=1, **shapes)
    assert sum(p.numel() for p in model.parameters()) == expected


def test_evaluator_rows_from_several_ranks_come_back_in_dataset_order():
    """The test loader gives rank r slice r of every global batch; the evaluator needs the dataset order back."""
    from hrm.training.trainer import interleave_rank_rows

    rows = torch.arange(3 * 8).view(-1, 1)  # 3 global batches of 8, dataset order
    local = 4
    parts = [
        torch.cat([rows[batch * 8 + rank * local : batch * 8 + (rank + 1) * local] for batch in range(3)])
        for rank in range(2)
    ]
    torch.testing.assert_close(interleave_rank_rows(parts, local), rows)


def test_either_spelling_points_a_saved_config_at_another_dataset():
    from hrm.config import apply_overrides

    saved = {"data_path": "a", "data_paths": ["a", "b"], "data_paths_test": ["a"]}
    moved = validate_config(apply_overrides(saved, ["data_path=c"]))
    assert (moved.data_path, moved.train_data_paths, moved.test_data_paths) == ("c", ["c"], ["c"])
    listed = validate_config(apply_overrides({"data_path": "a"}, ["data_paths=[d,e]"]))
    assert (listed.data_path, listed.train_data_paths) == ("d", ["d", "e"])
    single = validate_config({"data_paths": ["x"]})
    assert single.data_path == "x" and single.data_paths == [] and single.train_data_paths == ["x"]
