"""Model and twin files: safetensors round trips, metadata, no pickle, clear errors, atomic writes."""

from __future__ import annotations

import json
import struct

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from twin.data.batch import TrialBatch, make_batch
from twin.errors import ModelFileError
from twin.data.features import FeatureSpec, StimulusCoding
from twin.models.learner import LearnerModel, ModelSpec
from twin.models.rules import MODEL_RULES, NetworkConfig, make_config
from twin.models.params import TwinParams
from twin.models.state import TwinState
from twin.persist.model_files import FORMAT_VERSION, StoredModel, load_model, load_twin_params, save_model, save_twin_params


def small_batch(feats: FeatureSpec) -> TrialBatch:
    rng = np.random.default_rng(0)
    rows = []
    for subj, sessions in {"a": [20, 15], "b": [25]}.items():
        for s, n in enumerate(sessions, 1):
            for t in range(1, n + 1):
                side, choice = int(rng.integers(0, 2)), int(rng.integers(0, 2))
                c = float(rng.choice([0.0, 0.25, 1.0]))
                rows.append(dict(subject=subj, session=s, trial=t, contrast_left=c * (1 - side), contrast_right=c * side,
                                 choice=choice, feedback=1 if choice == side else -1, correct_side=side, prob_left=0.5))
    return make_batch(pd.DataFrame(rows), feats)


def perturbed(spec: ModelSpec, seed: int = 0) -> LearnerModel:
    """A model whose every parameter differs from a fresh initialisation."""
    torch.manual_seed(seed)
    model = LearnerModel(spec)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize("rule", MODEL_RULES)
def test_round_trip_gives_the_same_model(tmp_path, rule):
    spec = ModelSpec(rule, FeatureSpec(StimulusCoding.SPLIT, history=True), make_config(rule, hidden_size=6, scale_init=0.05))
    model = perturbed(spec, seed=1)
    meta = {"best_epoch": 7, "val_ll": -0.5123, "subjects": ["a", "b"], "nested": {"lr": None}}
    path = save_model(model, tmp_path / "models" / f"{rule}.safetensors", meta)
    assert path == tmp_path / "models" / f"{rule}.safetensors" and path.is_file()
    stored = load_model(path)
    assert isinstance(stored, StoredModel)
    assert stored.metadata == meta
    assert stored.model.spec == spec
    a, b = model.state_dict(), stored.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert not stored.model.training
    assert all(not p.requires_grad for p in stored.model.parameters())
    batch = small_batch(spec.features)
    with torch.no_grad():
        torch.testing.assert_close(stored.model.trajectory(batch), model.trajectory(batch), rtol=0, atol=0)


def test_metadata_defaults_to_empty(tmp_path):
    path = save_model(LearnerModel(ModelSpec("static")), tmp_path / "m.safetensors")
    assert load_model(str(path)).metadata == {}


def test_file_is_plain_safetensors(tmp_path):
    model = perturbed(ModelSpec("dnn", rule_config=NetworkConfig(hidden_size=4)))
    path = save_model(model, tmp_path / "m.safetensors", {"x": 1})
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])  # safetensors: little-endian u64 header length, then JSON
    assert 0 < n < len(raw) - 8
    header = json.loads(raw[8 : 8 + n])
    assert header["__metadata__"]["format"] == "learning-twins/model"
    assert header["__metadata__"]["format_version"] == FORMAT_VERSION
    assert json.loads(header["__metadata__"]["spec"]) == model.spec.to_dict()
    assert set(header) - {"__metadata__"} == set(model.state_dict())
    assert b"\x80\x04" not in raw[:2] and not raw.startswith(b"PK")  # not a pickle / torch zip
    with safe_open(str(path), framework="pt") as fh:
        assert set(fh.keys()) == set(model.state_dict())
        torch.testing.assert_close(fh.get_tensor("w0"), model.w0.detach())


def test_overwrite_and_no_temp_files_left(tmp_path):
    folder = tmp_path / "out"
    path = folder / "m.safetensors"
    save_model(perturbed(ModelSpec("reinforce"), seed=1), path)
    second = perturbed(ModelSpec("reinforce"), seed=2)
    save_model(second, path)
    assert sorted(p.name for p in folder.iterdir()) == ["m.safetensors"]
    assert torch.equal(load_model(path).model.w0, second.w0.detach())


def test_failed_write_leaves_no_temp_file_and_the_old_file_intact(tmp_path, monkeypatch):
    import twin.persist.atomic

    path = tmp_path / "m.safetensors"
    first = perturbed(ModelSpec("reinforce"), seed=1)
    save_model(first, path)
    before = path.read_bytes()

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(twin.persist.atomic.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        save_model(perturbed(ModelSpec("reinforce"), seed=2), path)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]
    assert path.read_bytes() == before
    with pytest.raises(TypeError):  # metadata that is not JSON: nothing written at all
        save_model(first, tmp_path / "other.safetensors", {"bad": object()})
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


# --------------------------------------------------------------------------------------------
# errors


def write_raw(path, tensors, header) -> None:
    save_file(tensors, str(path), metadata=header)


def good_header(spec: ModelSpec) -> dict[str, str]:
    return {"format": "learning-twins/model", "format_version": "1", "spec": json.dumps(spec.to_dict()), "metadata": "{}"}


def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="no such model file"):
        load_model(tmp_path / "nope.safetensors")
    with pytest.raises(ModelFileError):
        load_model(tmp_path)  # a folder


@pytest.mark.parametrize("content", [np.random.default_rng(0).bytes(256), b"", b"\x00" * 3, b"not a model\n"])
def test_not_a_safetensors_file(tmp_path, content):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match="junk.safetensors"):
        load_model(path)


def test_torch_pickle_is_refused(tmp_path):
    path = tmp_path / "pickled.safetensors"
    torch.save(LearnerModel(ModelSpec("static")).state_dict(), path)
    with pytest.raises(ModelFileError):
        load_model(path)


def test_safetensors_without_our_header(tmp_path):
    path = tmp_path / "other.safetensors"
    write_raw(path, {"w0": torch.zeros(2)}, {"format": "pt"})
    with pytest.raises(ModelFileError, match="not a learning-twins model file"):
        load_model(path)
    write_raw(path, {"w0": torch.zeros(2)}, None)
    with pytest.raises(ModelFileError, match="not a learning-twins model file"):
        load_model(path)


def test_unknown_rule_in_header(tmp_path):
    spec = ModelSpec("static")
    header = good_header(spec)
    header["spec"] = json.dumps(dict(spec.to_dict(), rule="transformer"))
    path = tmp_path / "m.safetensors"
    write_raw(path, {"w0": torch.zeros(2)}, header)
    with pytest.raises(ModelFileError, match="transformer") as info:
        load_model(path)
    assert "dnn" in str(info.value)  # lists the known rules


@pytest.mark.parametrize("spec_text", ["not json", json.dumps({"rule": "static"}), json.dumps({"rule": "dnn", "features": {"stimulus": "polar", "bias": True, "history": False}, "rule_config": {}})])
def test_bad_spec_in_header(tmp_path, spec_text):
    header = good_header(ModelSpec("static"))
    header["spec"] = spec_text
    path = tmp_path / "m.safetensors"
    write_raw(path, {"w0": torch.zeros(2)}, header)
    with pytest.raises(ModelFileError, match="bad model spec"):
        load_model(path)


def test_wrong_tensor_shapes_or_names(tmp_path):
    spec = ModelSpec("reinforce")
    good = {k: v.clone() for k, v in LearnerModel(spec).state_dict().items()}
    path = tmp_path / "m.safetensors"
    bad = dict(good, w0=torch.zeros(5))
    write_raw(path, bad, good_header(spec))
    with pytest.raises(ModelFileError, match="do not match"):
        load_model(path)
    missing = {k: v for k, v in good.items() if k != "rule.baseline"}
    write_raw(path, missing, good_header(spec))
    with pytest.raises(ModelFileError, match="do not match"):
        load_model(path)
    extra = dict(good, surplus=torch.ones(1))
    write_raw(path, extra, good_header(spec))
    with pytest.raises(ModelFileError, match="do not match"):
        load_model(path)
    write_raw(path, good, good_header(spec))  # the control: the same file with the right tensors loads
    assert load_model(path).model.spec == spec


def test_twin_params_round_trip_with_their_state(tmp_path):
    params = TwinParams(torch.tensor([1.5, -0.25]), torch.tensor([0.0, 0.3]), "ab" * 32)
    state = TwinState(w=torch.tensor([2.0, 0.5]), h=torch.zeros(0), through_session=3, phase=2)
    back = load_twin_params(save_twin_params(params, tmp_path / "t.safetensors", {"subject": "a"}, state=state))
    assert back.params.rule == params.rule and torch.equal(back.params.w0, params.w0) and torch.equal(back.params.log_rate, params.log_rate)
    assert back.metadata == {"subject": "a"} and back.state is not None and torch.equal(back.state.w, state.w) and back.state.phase == 2
    assert load_twin_params(save_twin_params(params, tmp_path / "n.safetensors")).state is None


def test_a_model_file_is_not_a_twin_file_and_the_reverse(tmp_path):
    model_path = save_model(LearnerModel(ModelSpec("static")), tmp_path / "m.safetensors")
    twin_path = save_twin_params(TwinParams(torch.zeros(2), torch.zeros(2), "r"), tmp_path / "t.safetensors")
    with pytest.raises(ModelFileError, match="not a learning-twins twin file"):
        load_twin_params(model_path)
    with pytest.raises(ModelFileError, match="not a learning-twins model file"):
        load_model(twin_path)
    save_file({"twin.w0": torch.zeros(2), "twin.log_rate": torch.zeros(3)}, str(tmp_path / "bad.safetensors"), metadata={"format": "learning-twins/twin", "rule": "r"})
    with pytest.raises(ModelFileError, match="bad twin parameters"):
        load_twin_params(tmp_path / "bad.safetensors")
