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
from twin.models.params import Adaptation, TwinModel
from twin.persist.records import TwinHyperparameters, TwinMetrics
from twin.persist.store import TwinNotFoundError, TwinStore, _Base, hash_trials

@pytest.fixture(params=BACKENDS)
def store(request, tmp_path):
    st = open_store(request.param, tmp_path / "store")
    yield st
    st.close()


def _model(rule: str = "dnn", seed: int = 0) -> TwinModel:
    torch.manual_seed(seed)
    return TwinModel.of(LearnerModel(ModelSpec(rule)).eval())


def test_put_get_load_roundtrip(store):
    twin = _model()
    m = twin.model
    hyper = TwinHyperparameters(spec=ModelSpec("dnn"), fit={"epochs": 3, "learning_rate": None}, adaptation=Adaptation.INITIAL_WEIGHTS, warm_start_from=2)
    v = store.put("CSHL_002", twin, trained_through_session=5, data_hash="abc", metrics=TwinMetrics(val_ll=-0.51), hyperparameters=hyper)
    assert (v.subject, v.version, v.rule, v.trained_through_session) == ("CSHL_002", 1, "dnn", 5)
    assert v.metrics == TwinMetrics(val_ll=pytest.approx(-0.51)) and v.hyperparameters == hyper and v.spec == ModelSpec("dnn")
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
    assert torch.equal(old.rule.fc1.weight, m1.model.rule.fc1.weight)
    assert torch.equal(new.rule.fc1.weight, m2.model.rule.fc1.weight)
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
    from twin.models.params import TwinModel
    from twin.persist.store import TwinStore
    st = TwinStore(sys.argv[1], url=sys.argv[2] if len(sys.argv) > 2 else None)
    print("ready", flush=True)
    i = 0
    while True:
        i += 1
        st.put(f"s{i % 3}", TwinModel.of(LearnerModel(ModelSpec("rnn"))), trained_through_session=i, data_hash=str(i))
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


@pytest.fixture(scope="module")
def adapted():
    """A population rule, twins of four animals adapted over it, and the animals' trials."""
    from twin.data.batch import make_batch
    from twin.fit.adapt import adapt
    from twin.fit.train import FitConfig
    from twin.sim.agents import DEFAULT_TRUTHS, Family
    from twin.sim.simulate import simulate
    from twin.protocol import IBL_DEFAULT

    trials = simulate(DEFAULT_TRUTHS[Family.REINFORCE].build(), IBL_DEFAULT, 4, 600, seed=3).trials
    batch = make_batch(trials, ModelSpec("dnn").features)
    torch.manual_seed(0)
    population = LearnerModel(ModelSpec("dnn")).eval()
    res = adapt(population, batch, batch, Adaptation.INITIAL_WEIGHTS_AND_RATE, FitConfig(learning_rate=0.05, epochs=3, patience=3))
    return res.twins, trials


def test_a_cohort_stores_its_rule_once_and_loaded_twins_predict_bit_for_bit(store, adapted):
    from twin.analysis.predict import predict
    from twin.models.state import end_state

    twins, trials = adapted
    for s, t in twins.items():
        sub = trials[trials["subject"] == s]
        store.put(s, t, trained_through_session=int(sub["session"].max()), data_hash=hash_trials(sub), state=end_state(t.model, sub))
    assert len(list((store.root / "rules").iterdir())) == 1  # one population rule for the four twins
    refs = set()
    for s, t in twins.items():
        sub = trials[trials["subject"] == s]
        back = store.load_twin(s)
        refs.add(back.params.rule)
        assert back.params.rule == t.params.rule and torch.equal(back.params.w0, t.params.w0) and torch.equal(back.params.log_rate, t.params.log_rate)
        assert (store.root / back.meta.weights_file).stat().st_size < 1024  # the twin file holds the animal's parameters only
        ours, theirs = predict(t.model, sub), predict(back.model, sub)
        assert ours.p_right.tobytes() == theirs.p_right.tobytes()
        assert torch.equal(back.state.w, end_state(t.model, sub).w) and torch.equal(back.state.h, end_state(t.model, sub).h)
    assert refs == {next(iter(twins.values())).params.rule}


def test_a_missing_or_tampered_rule_is_detected(store, adapted):
    twins, _ = adapted
    s, t = next(iter(twins.items()))
    store.put(s, t, trained_through_session=1, data_hash="h")
    (rule_file,) = (store.root / "rules").iterdir()
    data = bytearray(rule_file.read_bytes())
    data[-1] ^= 0xFF
    rule_file.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="checksum mismatch for the rule"):
        store.load(s)
    rule_file.unlink()
    with pytest.raises(ModelFileError, match="rule of .* missing"):
        store.load(s)


def test_a_store_of_whole_model_files_still_loads(store):
    """Stores written before rules were shared keep a whole model file per version."""
    import datetime as dt

    from sqlalchemy.orm import Session

    from twin.models.state import TwinState
    from twin.persist.model_files import save_model
    from twin.persist.store import _sha256, _TwinRow

    model = _model("reinforce").model
    state = TwinState(w=torch.tensor([1.0, -0.5]), h=torch.zeros(0), through_session=4, phase=1)
    path = save_model(model, store.root / "weights" / "old" / "v1.safetensors", {"subject": "old"}, state=state)
    with Session(store.engine) as s, s.begin():
        s.add(_TwinRow(
            subject="old", version=1, rule="reinforce", spec=model.spec.to_dict(),
            hyperparameters={"spec": model.spec.to_dict(), "fit": {"epochs": 5}, "adaptation": "w0+rate"},
            trained_through_session=4, data_hash="h", code_version="0.1", metrics={"val_ll": -0.6, "population_val_ll": -0.62},
            weights_file="weights/old/v1.safetensors", weights_sha256=_sha256(path), created_at=dt.datetime.now(dt.timezone.utc),
        ))
    back = store.load_twin("old")
    assert back.meta.hyperparameters == TwinHyperparameters(spec=model.spec, fit={"epochs": 5}, adaptation=Adaptation.INITIAL_WEIGHTS_AND_RATE)
    assert back.meta.metrics == TwinMetrics(val_ll=-0.6, population_val_ll=-0.62)
    assert back.state is not None and torch.equal(back.state.w, state.w) and back.state.phase == 1
    for (k1, t1), (k2, t2) in zip(model.state_dict().items(), back.model.state_dict().items()):
        assert k1 == k2 and torch.equal(t1, t2)


def test_an_ensemble_version_round_trips_with_its_rules_stored_once(store):
    from twin.models.ensemble import ENSEMBLE_RULE, TwinEnsemble
    from twin.models.state import TwinState
    from twin.persist.store import NewVersion
    from twin.persist.tables import _RuleRow
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    ens = TwinEnsemble.of([_model("static", 0), _model("reinforce", 1), _model("dnn", 2)], [0.2, 0.5, 0.3], ["static/seed0", "reinforce/seed0", "dnn/seed0"])
    states = tuple(TwinState(torch.randn(c.model.n_weights), torch.zeros(c.model.rule.state_size), 4, phase=i) for i, c in enumerate(ens.components))
    ens = type(ens)(ens.components, ens.weights, ens.labels, states)
    items = [NewVersion(s, ens, 4, "h") for s in ("A", "B")]  # two animals over the same three rules
    va, vb = store.put_many(items, alias="serving")
    assert va.rule == ENSEMBLE_RULE and va.spec == ens.components[1].model.spec  # the largest-weight component's
    with Session(store.engine) as s:
        assert s.scalar(select(func.count()).select_from(_RuleRow)) == 3
    got = store.load_twin("A", alias="serving")
    assert got.ensemble is not None and got.ensemble.labels == ens.labels
    assert torch.allclose(got.ensemble.weights, ens.weights)
    assert got.twin.params.rule == ens.components[1].params.rule and got.state.phase == 1
    for c0, c1, s0, s1 in zip(ens.components, got.ensemble.components, states, got.ensemble.states):
        assert c1.population.spec == c0.population.spec and torch.equal(c1.params.w0, c0.params.w0)
        assert torch.equal(s1.w, s0.w) and s1.through_session == 4
        for k, t in c0.population.rule.state_dict().items():
            assert torch.equal(c1.population.rule.state_dict()[k], t)
    # a single twin stored after it still loads as before, and the store verifies clean
    v = store.put("A", _model("dnn"), trained_through_session=5, data_hash="x")
    assert store.load_twin("A", version=v.version).ensemble is None
    from twin.persist.integrity import verify_store

    assert verify_store(store, min_age_s=0.0).clean
