"""The versioned twin store, on SQLite and (when TWIN_TEST_POSTGRES_URL is set) PostgreSQL."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from store_backends import BACKENDS, PG_URL, open_store, run_concurrently
from twin.errors import ModelFileError
from twin.models.learner import LearnerModel, ModelSpec
from twin.persist.store import TwinNotFoundError, TwinStore, _Base, hash_trials

@pytest.fixture(params=BACKENDS)
def store(request, tmp_path):
    st = open_store(request.param, tmp_path / "store")
    yield st
    st.close()


def _model(rule: str = "dnn", seed: int = 0) -> LearnerModel:
    torch.manual_seed(seed)
    return LearnerModel(ModelSpec(rule)).eval()


def test_put_get_load_roundtrip(store):
    m = _model()
    v = store.put("CSHL_002", m, trained_through_session=5, data_hash="abc", metrics={"val_ll": -0.51}, hyperparameters={"hidden": 32})
    assert (v.subject, v.version, v.rule, v.trained_through_session) == ("CSHL_002", 1, "dnn", 5)
    assert v.metrics == {"val_ll": pytest.approx(-0.51)} and v.hyperparameters == {"hidden": 32}
    assert v.code_version and v.created_at.tzinfo is not None
    loaded, meta = store.load("CSHL_002")
    assert meta == v
    for (k1, t1), (k2, t2) in zip(m.state_dict().items(), loaded.state_dict().items()):
        assert k1 == k2 and torch.equal(t1, t2)


def test_new_session_makes_new_version_old_one_intact(store):
    m1, m2 = _model(seed=1), _model(seed=2)
    store.put("a", m1, trained_through_session=3, data_hash="h3", alias="serving")
    store.put("a", m2, trained_through_session=4, data_hash="h4")
    vs = store.versions("a")
    assert [v.version for v in vs] == [1, 2]
    assert [v.trained_through_session for v in vs] == [3, 4]
    old, _ = store.load("a", version=1)
    new, _ = store.load("a")
    assert torch.equal(old.rule.fc1.weight, m1.rule.fc1.weight)
    assert torch.equal(new.rule.fc1.weight, m2.rule.fc1.weight)
    assert store.resolve("a", alias="serving") == 1
    store.set_alias("a", "serving", 2)
    assert store.get("a", alias="serving").version == 2
    assert store.get("a", version=2).aliases == ("serving",)


def test_unknown_things_raise_not_found(store):
    with pytest.raises(TwinNotFoundError, match="no twin stored for subject 'ghost'"):
        store.get("ghost")
    store.put("a", _model(), trained_through_session=1, data_hash="h")
    with pytest.raises(TwinNotFoundError, match="version 7"):
        store.get("a", version=7)
    with pytest.raises(TwinNotFoundError, match="alias 'serving'"):
        store.load("a", alias="serving")
    with pytest.raises(TwinNotFoundError):
        store.set_alias("a", "serving", 9)


def test_subjects_listed_and_versions_are_per_subject(store):
    for s in ("b", "a", "b"):
        store.put(s, _model("static"), trained_through_session=1, data_hash="h")
    assert store.subjects() == ["a", "b"]
    assert [v.version for v in store.versions("b")] == [1, 2]


def test_tampered_or_missing_weights_are_detected(store):
    v = store.put("a", _model(), trained_through_session=1, data_hash="h")
    path = store.root / v.weights_file
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="checksum"):
        store.load("a")
    path.unlink()
    with pytest.raises(ModelFileError, match="missing"):
        store.load("a")


def test_concurrent_writers_get_distinct_versions(store):
    errors = run_concurrently(lambda i: store.put("a", _model("static"), trained_through_session=i, data_hash=str(i)), 6)
    assert not errors
    assert sorted(v.version for v in store.versions("a")) == [1, 2, 3, 4, 5, 6]


def test_hash_trials_changes_with_content():
    df = pd.DataFrame({"subject": ["a", "a"], "choice": [1, 0]})
    assert hash_trials(df) == hash_trials(df.copy())
    assert hash_trials(df) != hash_trials(df.assign(choice=[0, 0]))


WRITER = textwrap.dedent(
    """
    import sys, torch
    from twin.models.learner import LearnerModel, ModelSpec
    from twin.persist.store import TwinStore
    st = TwinStore(sys.argv[1], url=sys.argv[2] if len(sys.argv) > 2 else None)
    print("ready", flush=True)
    i = 0
    while True:
        i += 1
        st.put(f"s{i % 3}", LearnerModel(ModelSpec("rnn")), trained_through_session=i, data_hash=str(i))
    """
)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigkill_during_writes_leaves_a_consistent_store(tmp_path: Path, backend):
    root = tmp_path / "store"
    args = [sys.executable, "-c", WRITER, str(root)] + ([PG_URL] if backend == "postgres" else [])
    if backend == "postgres":
        st0 = TwinStore(root, url=PG_URL)
        _Base.metadata.drop_all(st0.engine)
        st0.close()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    time.sleep(2.0)  # many writes in flight by now
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    st = TwinStore(root, url=PG_URL if backend == "postgres" else None)
    listed = [(s, v.version) for s in st.subjects() for v in st.versions(s)]
    assert listed, "the writer stored nothing in 2 s"
    for subject, version in listed:
        model, meta = st.load(subject, version=version)
        assert meta.rule == "rnn" and model.spec.rule == "rnn"
    st.close()


def test_results_are_versioned_per_kind_and_name(store):
    from twin.persist.store import ResultKind

    a = store.put_result(ResultKind.CURRICULUM_SEARCH, "cohort-a", {"best": {"mean_trials": 9000.5}, "tags": ("x", "y")})
    b = store.put_result(ResultKind.CURRICULUM_SEARCH, "cohort-a", {"best": {"mean_trials": 8800.0}})
    c = store.put_result(ResultKind.HYPERPARAMETER_SEARCH, "cohort-a", {"best": {"hidden_size": 16}})
    assert (a.version, b.version, c.version) == (1, 2, 1)
    assert store.get_result(ResultKind.CURRICULUM_SEARCH, "cohort-a").payload == {"best": {"mean_trials": 8800.0}}
    assert store.get_result(ResultKind.CURRICULUM_SEARCH, "cohort-a", version=1).payload["tags"] == ["x", "y"]
    assert [r.kind for r in store.results()] == [ResultKind.CURRICULUM_SEARCH] * 2 + [ResultKind.HYPERPARAMETER_SEARCH]
    assert len(store.results(ResultKind.HYPERPARAMETER_SEARCH)) == 1
    with pytest.raises(TwinNotFoundError, match="curriculum_search"):
        store.get_result(ResultKind.CURRICULUM_SEARCH, "cohort-b")
