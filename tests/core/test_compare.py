"""`python -m hrm.compare`: per-tensor relative errors between two checkpoints of either key form."""

import torch

from hrm.compare import main


def test_compare_reads_both_key_forms_and_reports_through_its_exit_status(tmp_path, capsys):
    state = {"model.inner.a": torch.randn(4, 3), "model.inner.b": torch.zeros(2)}
    torch.save({f"_orig_mod.{k}": v for k, v in state.items()}, tmp_path / "ours")
    torch.save(state, tmp_path / "theirs")
    assert main([str(tmp_path / "ours"), str(tmp_path / "theirs")]) == 0
    assert "largest relative error 0.000e+00" in capsys.readouterr().out

    nudged = dict(state, **{"model.inner.a": state["model.inner.a"] * (1 + 1e-3)})
    torch.save(nudged, tmp_path / "nudged")
    assert main([str(tmp_path / "nudged"), str(tmp_path / "theirs")]) == 1
    assert main([str(tmp_path / "nudged"), str(tmp_path / "theirs"), "--rtol", "2e-3"]) == 0
    assert "model.inner.a  1.000e-03" in capsys.readouterr().out


def test_unusable_input_is_a_one_line_error(tmp_path, capsys):
    torch.save({"model.inner.a": torch.ones(2)}, tmp_path / "one")
    torch.save({"model.inner.c": torch.ones(2)}, tmp_path / "other")
    assert main([str(tmp_path / "one"), str(tmp_path / "other")]) == 2
    assert main([str(tmp_path / "one"), str(tmp_path / "missing")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and all(line.startswith("error: ") for line in errors)
    assert "different tensors" in errors[0] and "missing" in errors[1]
