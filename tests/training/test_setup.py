"""The steps that build a training run (`hrm.training.setup`), each on its own, without training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from training_helpers import tiny_config

from hrm.distributed import DistributedContext
from hrm.errors import ConfigError, DatasetError
from hrm.training.data_checks import check_datasets
from hrm.training.naming import default_checkpoint_path, default_project_name
from hrm.training.optimizers import AdamATan2, SignSGDSparse, register_optimizer_set, registry
from hrm.training.optimizers.muon import Muon
from hrm.training.setup import (
    check_run_config,
    find_resume,
    make_datasets,
    make_model,
    make_optimizers,
    plan_steps,
    resolve_names,
)


def cpu_context(rank: int = 0) -> DistributedContext:
    return DistributedContext(rank=rank, world_size=1, local_rank=rank, device=torch.device("cpu"))


@pytest.mark.parametrize(
    "overrides, world_size, message",
    [
        (("epochs=10", "eval_interval=3"), 1, "epochs=10 must be a multiple of eval_interval=3"),
        ((), 3, "global_batch_size=8 must be divisible by the number of processes (3)"),
        (("data_workers=-1",), 1, "data_workers=-1 must be auto or a number of processes >= 0"),
        (("eval_save_outputs=[logits,logit]",), 1, "eval_save_outputs: 'logit' is not an output; choose from"),
        # several problems: the first check's message, as before the split
        (("epochs=10", "eval_interval=3", "data_workers=-1"), 3, "epochs=10 must be a multiple of eval_interval=3"),
    ],
)
def test_check_run_config_refuses_settings_that_cannot_work(tiny_dataset, tmp_path, overrides, world_size, message):
    config = tiny_config(tiny_dataset, tmp_path, *overrides)
    with pytest.raises(ConfigError) as info:
        check_run_config(config, world_size)
    assert str(info.value).startswith(message)


def test_check_run_config_accepts_a_consistent_config(tiny_dataset, tmp_path):
    check_run_config(tiny_config(tiny_dataset, tmp_path, "eval_save_outputs=[logits,preds]"), world_size=2)


def test_find_resume(tiny_dataset, tmp_path):
    config = tiny_config(tiny_dataset, tmp_path / "run")
    assert find_resume(config, cpu_context()) == (config, None)
    fresh = config.model_copy(update={"resume": "auto"})
    assert find_resume(fresh, cpu_context()) == (fresh, None)  # nothing saved yet: start from scratch
    nameless = fresh.model_copy(update={"checkpoint_path": None, "run_name": None})
    with pytest.raises(ConfigError, match="resume=auto needs checkpoint_path"):
        find_resume(nameless, cpu_context())


def test_resolve_names_prefers_the_config_then_the_resumed_run_then_the_defaults(tiny_dataset, tmp_path):
    config = tiny_config(tiny_dataset, tmp_path).model_copy(
        update={"project_name": None, "run_name": None, "checkpoint_path": None}
    )
    saved = {"project_name": "saved project", "run_name": "saved run", "checkpoint_path": "saved/folder"}
    resumed = (Path("saved/folder/train_state_4"), ({"config": saved}, {}, None))
    named = resolve_names(config, cpu_context(), resumed)
    assert (named.project_name, named.run_name, named.checkpoint_path) == ("saved project", "saved run", "saved/folder")
    own = resolve_names(config.model_copy(update={"run_name": "mine"}), cpu_context(), resumed)
    assert (own.project_name, own.run_name) == ("saved project", "mine")
    fresh = resolve_names(config, cpu_context(), None)
    assert fresh.project_name == default_project_name(str(tiny_dataset))
    assert fresh.run_name and fresh.checkpoint_path == default_checkpoint_path(fresh.project_name, fresh.run_name)


def test_plan_steps(tiny_dataset, tmp_path):
    train_meta = check_datasets([str(tiny_dataset)], [str(tiny_dataset)])[0]  # 12 groups of 2 examples
    config = tiny_config(tiny_dataset, tmp_path, "epochs=6", "eval_interval=2")
    assert plan_steps(config, train_meta) == (2, 3, 6 * 12 * 2 // 8)
    too_big = tiny_config(tiny_dataset, tmp_path, "epochs=2", "global_batch_size=64")
    with pytest.raises(DatasetError, match="no training step fits: 12 groups x 2 epochs"):
        plan_steps(too_big, train_meta)


def test_make_datasets(tiny_dataset, tmp_path):
    config = tiny_config(tiny_dataset, tmp_path, "epochs=6", "eval_interval=3")
    train, test = make_datasets(config, cpu_context(), epochs_per_chunk=3)
    assert (train.split, train.config.test_set_mode, train.config.epochs_per_iter) == ("train", False, 3)
    assert (test.split, test.config.test_set_mode, test.config.epochs_per_iter) == ("test", True, 1)


def test_make_model_is_seeded_per_rank(tiny_dataset, tmp_path):
    config = tiny_config(tiny_dataset, tmp_path)
    shapes = check_datasets([str(tiny_dataset)], [str(tiny_dataset)])[0].model_shapes()

    def weights(rank: int, seed: int) -> list[torch.Tensor]:
        model = make_model(config.model_copy(update={"seed": seed}), cpu_context(rank), shapes)
        return [tensor.clone() for tensor in model.state_dict().values()]

    def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
        return all(torch.equal(x, y) for x, y in zip(a, b))

    assert same(weights(0, 1), weights(0, 1))
    assert not same(weights(0, 1), weights(1, 1))  # seed + rank
    assert same(weights(1, 1), weights(0, 2))


def test_make_model_freezes_all_but_the_puzzle_embedding(tiny_dataset, tmp_path):
    shapes = check_datasets([str(tiny_dataset)], [str(tiny_dataset)])[0].model_shapes()
    frozen = make_model(tiny_config(tiny_dataset, tmp_path, "freeze_weights=True"), cpu_context(), shapes)
    assert not any(param.requires_grad for param in frozen.parameters())
    assert frozen.model.puzzle_emb is not None
    without_embedding = tiny_config(tiny_dataset, tmp_path, "freeze_weights=True", "arch.puzzle_emb_ndim=0")
    with pytest.raises(ConfigError, match="freeze_weights=True trains only the puzzle embedding"):
        make_model(without_embedding, cpu_context(), shapes)


@pytest.mark.parametrize(
    "overrides, kinds, base_lrs",
    [
        ((), ["sign", "adam"], [3e-2, 1e-2]),
        (("freeze_weights=True",), ["sign"], [3e-2]),
        (("arch.puzzle_emb_ndim=0",), ["adam"], [1e-2]),
        (("use_muon=True",), ["sign", "muon"], [3e-2, 1e-2]),
        (("optimizers=muon", "freeze_weights=True"), ["sign"], [3e-2]),
    ],
)
def test_make_optimizers(tiny_dataset, tmp_path, overrides, kinds, base_lrs):
    config = tiny_config(tiny_dataset, tmp_path, "puzzle_emb_lr=3e-2", *overrides)
    shapes = check_datasets([str(tiny_dataset)], [str(tiny_dataset)])[0].model_shapes()
    model = make_model(config, cpu_context(), shapes)
    optimizers, lrs = make_optimizers(model, config, world_size=1)
    names = {SignSGDSparse: "sign", AdamATan2: "adam", Muon: "muon"}
    assert [names[type(opt)] for opt in optimizers] == kinds
    assert lrs == base_lrs
    assert all(group["lr"] == 0.0 for opt in optimizers for group in opt.param_groups)  # the schedule sets it


def test_an_optimiser_set_defined_outside_the_package_is_chosen_by_name(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "_SETS", dict(registry._SETS))  # the registration ends with the test

    @register_optimizer_set("plain_sgd")
    def plain_sgd(model, config, world_size):
        return [(torch.optim.SGD(model.parameters(), lr=0.0), config.lr / 10)]

    config = tiny_config(tiny_dataset, tmp_path, "optimizers=plain_sgd")
    shapes = check_datasets([str(tiny_dataset)], [str(tiny_dataset)])[0].model_shapes()
    optimizers, lrs = make_optimizers(make_model(config, cpu_context(), shapes), config, world_size=1)
    assert [type(opt) for opt in optimizers] == [SignSGDSparse, torch.optim.SGD]
    assert lrs == [config.puzzle_emb_lr, config.lr / 10]
    with pytest.raises(
        ConfigError, match="optimizers='lion' is not an optimiser set; choose one of adam_atan2, muon, plain"
    ):
        tiny_config(tiny_dataset, tmp_path, "optimizers=lion")


def test_compile_on_a_cpu_without_a_cpp_compiler_runs_eagerly_with_a_warning(monkeypatch, caplog):
    from hrm import compiling
    from hrm.evaluation.segments import should_compile
    from hrm.training.setup import compiled

    model = torch.nn.Linear(2, 2)
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    assert compiled(model, True, torch.device("cpu")) is model
    assert "needs a C++ compiler" in caplog.text and "training runs without it" in caplog.text
    assert not should_compile(True, None, torch.device("cpu"), 1)
    assert "evaluation runs without it" in caplog.text
    monkeypatch.delenv("CXX")
    monkeypatch.setattr(compiling, "cpp_compiler_available", lambda: True)
    before = torch.are_deterministic_algorithms_enabled()
    try:
        assert compiled(model, True, torch.device("cpu")) is not model
        assert torch.are_deterministic_algorithms_enabled()  # a compiled CPU run repeats itself
    finally:
        torch.use_deterministic_algorithms(before)
    assert compiled(model, "auto", torch.device("cpu")) is model  # auto compiles on CUDA only
