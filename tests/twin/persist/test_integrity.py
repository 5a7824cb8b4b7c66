"""Store integrity: all-or-nothing cohort writes, the operation log, and ``verify_store`` /
``repair`` (checksums of weights and sessions, orphans, temporary files, half-switched cohorts)."""

from __future__ import annotations

import os
import time

import pandas as pd
import pytest
import torch
from sqlalchemy.exc import IntegrityError

from trial_tables import random_trials_table
from twin.models.learner import LearnerModel, ModelSpec
from twin.models.params import TwinModel
from twin.persist.integrity import ProblemKind, remove_leftovers, repair, verify_store
from twin.persist.oplog import OperationKind, OperationLog, OperationRecord, OperationState
from twin.persist.records import TwinHyperparameters
from twin.persist.sessions import SESSION_COLUMNS, SessionStore
from twin.persist.store import NewVersion, TwinStore


def _twin(seed: int) -> TwinModel:
    torch.manual_seed(seed)
    return TwinModel.of(LearnerModel(ModelSpec("rnn")).eval())


def _cohort(store: TwinStore, subjects: list[str], cohort: str, seed: int = 0) -> None:
    hyper = TwinHyperparameters(cohort=cohort)
    store.put_many([NewVersion(s, _twin(seed), 2, "h", hyperparameters=hyper) for s in subjects], alias="serving")


def _files(root) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.safetensors"))


def test_put_many_is_all_or_nothing(tmp_path):
    store = TwinStore(tmp_path)
    _cohort(store, ["a", "b", "c"], "c1")
    before = _files(tmp_path)

    def killed(s, refs):  # the process dies inside the switch's transaction
        assert [v for _, v in refs] == [2, 2, 2]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.put_many([NewVersion(s, _twin(1), 3, "h2") for s in "abc"], alias="serving", in_transaction=killed)
    assert [store.get(s, alias="serving").version for s in "abc"] == [1, 1, 1]
    assert [len(store.versions(s)) for s in "abc"] == [1, 1, 1]
    added = set(_files(tmp_path)) - set(before)
    assert all(f.startswith("rules/") for f in added)  # the twin files went with the transaction; the new rule has its row
    assert verify_store(store, min_age_s=0).clean
    with pytest.raises(ValueError):
        store.put_many([NewVersion("a", _twin(1), 3, "x"), NewVersion("a", _twin(1), 4, "y")])


def test_a_clean_store_verifies_clean(tmp_path):
    store = TwinStore(tmp_path)
    sessions = SessionStore(store)
    sessions.add_session("a", random_trials_table({"x": [30]}, seed=1)[list(SESSION_COLUMNS)])
    _cohort(store, ["a", "b"], "c1")
    report = verify_store(store, min_age_s=0)
    assert report.clean, report.lines()
    assert (report.twins, report.sessions) == (2, 1) and report.lines()[-1].endswith("clean")


def test_damaged_files_orphans_and_temp_files_are_found(tmp_path):
    store = TwinStore(tmp_path)
    sessions = SessionStore(store)
    rec = sessions.add_session("a", random_trials_table({"x": [30]}, seed=1)[list(SESSION_COLUMNS)])
    _cohort(store, ["a", "b"], "c1")
    weights = tmp_path / store.get("a").weights_file
    weights.write_bytes(weights.read_bytes()[:-3] + b"xyz")
    (tmp_path / store.get("b").weights_file).unlink()
    session_file = next((tmp_path / "sessions").rglob("*.parquet"))
    df = pd.read_parquet(session_file)
    df.loc[0, "choice"] = -df.loc[0, "choice"]
    df.to_parquet(session_file, index=False)
    orphan = tmp_path / "weights" / "a" / "0123.safetensors"
    orphan.write_bytes(b"left by a killed writer")
    temp = tmp_path / "sessions" / "a" / ".tmp-abc.parquet"
    temp.write_bytes(b"half")
    assert verify_store(store, min_age_s=3600).recent_leftovers == 2  # young: a writer may be running
    kinds = sorted(p.kind.value for p in verify_store(store, min_age_s=0).problems)
    assert kinds == sorted(["checksum mismatch", "missing file", "checksum mismatch", "orphan file", "temporary file"]), kinds
    assert rec.session == 1
    report = verify_store(store, min_age_s=0)
    fixed = repair(store, report)
    assert {p.kind for p in fixed} == {ProblemKind.ORPHAN_FILE, ProblemKind.TEMP_FILE}
    assert not orphan.exists() and not temp.exists()
    left = verify_store(store, min_age_s=0)
    assert {p.kind for p in left.problems} == {ProblemKind.CHECKSUM_MISMATCH, ProblemKind.MISSING_FILE}  # never deleted
    assert all(str(tmp_path) not in line for line in left.lines())


def test_half_switched_cohort_is_found_and_rolled_forward(tmp_path):
    store = TwinStore(tmp_path)
    _cohort(store, ["a", "b", "c"], "old")
    _cohort(store, ["a", "b", "c"], "new")
    store.set_alias("c", "serving", 1)  # what a fit switching alias by alias left when killed
    (problem,) = verify_store(store, min_age_s=0).problems
    assert problem.kind is ProblemKind.HALF_SWITCHED_COHORT and problem.targets == (("c", 2),) and "2 of 3" in problem.detail
    repair(store, verify_store(store, min_age_s=0))
    assert verify_store(store, min_age_s=0).clean and store.get("c", alias="serving").version == 2


def test_remove_leftovers_honours_the_age(tmp_path):
    store = TwinStore(tmp_path)
    _cohort(store, ["a"], "c1")
    orphan = tmp_path / "weights" / "a" / "dead.safetensors"
    orphan.write_bytes(b"x")
    assert remove_leftovers(store, min_age_s=3600) == [] and orphan.exists()
    old = time.time() - 7200
    os.utime(orphan, (old, old))
    assert remove_leftovers(store, min_age_s=3600) == ["weights/a/dead.safetensors"] and not orphan.exists()


def test_operation_log_round_trip_request_ids_and_uploads(tmp_path):
    store = TwinStore(tmp_path)
    oplog = OperationLog(store)
    a = oplog.add(OperationRecord("op1", OperationKind.FIT_COHORT, OperationState.PENDING, "", "req-1", {"rule": "dnn"}))
    b = oplog.add(OperationRecord("op2", OperationKind.TWIN_UPDATE, OperationState.PENDING, "m1", "", {"subject": "m1"}))
    assert a.seq < b.seq
    with pytest.raises(IntegrityError):
        oplog.add(OperationRecord("op3", OperationKind.FIT_COHORT, OperationState.PENDING, "", "req-1"))
    oplog.add(OperationRecord("op4", OperationKind.TWIN_UPDATE, OperationState.PENDING, "m1", "req-1"))  # unique per kind
    assert oplog.by_request(OperationKind.FIT_COHORT, "req-1").id == "op1"
    assert oplog.pending(OperationKind.TWIN_UPDATE, "m1").id == "op2"
    oplog.update("op2", state=OperationState.SUCCEEDED, result={"twins": [["m1", 2]]}, progress=1.0)
    again = OperationLog(TwinStore(tmp_path)).get("op2")  # a new process over the same store
    assert again.state is OperationState.SUCCEEDED and again.result == {"twins": [["m1", 2]]} and again.params == {"subject": "m1"}
    assert [r.id for r in oplog.unfinished()] == ["op1", "op4"]
    with pytest.raises(ValueError):
        oplog.update("op1", id="other")
    assert oplog.upload("u1") is None
