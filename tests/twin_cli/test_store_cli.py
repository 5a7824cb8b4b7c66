"""``twin store verify [--repair]``: a plain report and an exit status (0 clean, 1 problems, 2
no store)."""

from __future__ import annotations

import torch

from twin.models.learner import LearnerModel, ModelSpec
from twin.models.params import TwinModel
from twin.persist.store import TwinStore
from twin_cli.cli import main


def _store(root):
    torch.manual_seed(0)
    store = TwinStore(root)
    store.put("m1", TwinModel.of(LearnerModel(ModelSpec("rnn")).eval()), trained_through_session=1, data_hash="h", alias="serving")
    store.close()


def test_verify_clean_then_orphans_then_repair(tmp_path, capsys):
    root = tmp_path / "twins"
    _store(root)
    assert main(["store", "verify", "--store", str(root), "--min-age", "0"]) == 0
    assert "checked 1 twin versions" in capsys.readouterr().out
    (root / "weights" / "m1" / ".tmp-x.safetensors").write_bytes(b"half")
    assert main(["store", "verify", "--store", str(root)]) == 0  # young: a writer may still be running
    assert "1 recent unnamed file(s) ignored" in capsys.readouterr().out
    assert main(["store", "verify", "--store", str(root), "--min-age", "0"]) == 1
    out = capsys.readouterr().out
    assert "temporary file: weights/m1/.tmp-x.safetensors" in out and "1 repairable" in out
    assert main(["store", "verify", "--store", str(root), "--min-age", "0", "--repair"]) == 0
    assert "repaired 1 problem(s)" in capsys.readouterr().out


def test_verify_reports_damage_and_keeps_it(tmp_path, capsys):
    root = tmp_path / "twins"
    _store(root)
    weights = next((root / "weights").rglob("*.safetensors"))
    weights.write_bytes(weights.read_bytes() + b"!")
    assert main(["store", "verify", "--store", str(root), "--repair"]) == 1
    out = capsys.readouterr().out
    assert "checksum mismatch" in out and weights.exists() and str(root) not in out


def test_verify_without_a_store_is_a_usage_error(tmp_path, capsys):
    assert main(["store", "verify", "--store", str(tmp_path / "nowhere")]) == 2
    assert "no store folder" in capsys.readouterr().err
    assert main(["store", "verify", "--store", str(tmp_path), "--min-age", "-1"]) == 2
