"""The shared pieces of every command: the key=value parser, the output-is-input check, the one-line wrapper,
and the atomic writer's file mode."""

from __future__ import annotations

import os
import stat
from typing import Literal

import pytest
import torch
from pydantic import BaseModel

from hrm.atomic import atomic_write_bytes, atomic_write_text
from hrm.commands import (
    check_outputs_are_not_inputs,
    is_out_of_memory,
    read_values,
    run_command,
    split_arguments,
)
from hrm.errors import ConfigError, DatasetError, Interrupted


class Keys(BaseModel):
    output: str = "results.json"
    maybe: str | None = None
    steps: list[int] = []
    flag: bool = False
    mode: Literal["a", "b"] = "a"


def test_values_split_at_the_first_equals_sign_and_keep_text_verbatim():
    arguments = split_arguments(
        ["output=runs/lr=1e-4/résultats ü.json", "maybe=null", "steps=[4,8]", "+flag=true"], "output=x"
    )
    assert [a.key for a in arguments] == ["output", "maybe", "steps", "flag"]
    values = read_values(arguments, Keys)
    assert values == {"output": "runs/lr=1e-4/résultats ü.json", "maybe": "null", "steps": [4, 8], "flag": True}


@pytest.mark.parametrize("argv", [["output"], ["=x"], ["+=x"]])
def test_an_argument_without_key_and_equals_is_a_config_error(argv):
    with pytest.raises(ConfigError, match="not of the form key=value"):
        split_arguments(argv, "output=x")


def test_unparsable_value_is_a_config_error():
    with pytest.raises(ConfigError, match="cannot parse arguments"):
        read_values(split_arguments(["steps=[1,2"], "x=y"), Keys)


def test_outputs_that_are_inputs_are_refused(tmp_path):
    data = tmp_path / "data"
    (data / "test").mkdir(parents=True)
    checkpoint = tmp_path / "run" / "step_1"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"x")
    link = tmp_path / "link"
    link.symlink_to(checkpoint)
    inputs = dict(input_files={"checkpoint": checkpoint}, input_folders={"data_path": data})
    for files, folders in [
        ({"output=link": link}, {}),
        ({"output=data/test/dataset.json": data / "test" / "dataset.json"}, {}),
        ({}, {"out=data": data}),
        ({}, {"out=tmp": tmp_path}),
        ({"output=a": tmp_path / "a", "submission=a": tmp_path / "a"}, {}),
    ]:
        with pytest.raises(ConfigError):
            check_outputs_are_not_inputs(files, folders, **inputs)
    check_outputs_are_not_inputs({"output=r.json": tmp_path / "run" / "r.json"}, {"out=o": tmp_path / "o"}, **inputs)


def test_wrapper_turns_failures_into_one_line_and_a_status(capsys):
    def raising(err):
        def body():
            raise err

        return body

    cases = [
        (DatasetError("no data\nsecond line"), 2, "error: no data"),
        (OSError(28, "No space left on device", "r.json"), 2, "No space left on device: r.json"),
        (KeyboardInterrupt(), 130, "error: halted here"),
        (Interrupted("stopped at step 3"), 130, "error: stopped at step 3"),
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB. GPU 0"), 2, "lower batch_size"),
        (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried"), 2, "lower batch_size"),
    ]
    for err, status, text in cases:
        assert run_command(raising(err), memory_settings="batch_size", interrupted="halted here") == status
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], lines
    with pytest.raises(RuntimeError, match="a bug"):
        run_command(raising(RuntimeError("a bug")), memory_settings="batch_size")
    assert not is_out_of_memory(ValueError("out of memory"))


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_follow_the_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.yaml", "x: 1\n")
        atomic_write_bytes(tmp_path / "b", lambda handle: torch.save({"w": torch.ones(1)}, handle))
    finally:
        os.umask(previous)
    for name in ("a.yaml", "b"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.yaml", "b"]
