"""NextSession on trained mice of the real 53-mouse file (issue 17, done-when 5): the plan is
the next stage's (biased blocks, biasedChoiceWorld), names its criterion and never is a
training-phase plan, even with the optimizer configured. Twins are fitted quickly on two real
mice (skipped when the shared file is absent)."""

from __future__ import annotations

import pytest

pytest.importorskip("grpc")

from server_env import RIG  # noqa: E402
from trial_tables import ibl_export_subset  # noqa: E402
from optimizer.propose import ProposalConfig  # noqa: E402
from server.app import ServerConfig, build_plane, start_server  # noqa: E402
from server.auth import AuthConfig  # noqa: E402
from server.convert import plan_pb  # noqa: E402
from service.catalog import TwinSelector  # noqa: E402
from service.curricula import NextSessionRequest  # noqa: E402
from service.optimizer_bridge import optimizer_proposer  # noqa: E402
from twin.analysis.criteria import READY_FOR_RECORDING  # noqa: E402
from twin.analysis.stage import TrainingStage  # noqa: E402
from twin.fit.cohort import CohortFitConfig, fit_cohort  # noqa: E402
from twin.fit.train import FitConfig  # noqa: E402
from twin.models.learner import ModelSpec  # noqa: E402
from twin.models.params import Adaptation  # noqa: E402
from twin.persist.sessions import SessionStore  # noqa: E402
from twin.persist.store import TwinStore  # noqa: E402
from twin.protocol import IBL_BIASED, IBLRIG_BIASED  # noqa: E402
from twin_client.client import TwinClient  # noqa: E402
from twin_proto.pb import curriculum_service_pb2 as cs  # noqa: E402
from server_env import FAST_UPDATE, TOKENS  # noqa: E402


@pytest.fixture(scope="module")
def real_store(tmp_path_factory):
    """Three real mice. The first two: their 3 training sessions and 2 biased ones (on biased
    blocks, not yet ready for recording: that takes 3 biased sessions), with static twins fitted
    quickly on the first 150 trials of each session. The third: 3 training and 9 biased sessions
    stored (it is ready for recording from its sixth session), no twin."""
    root = tmp_path_factory.mktemp("real-store")
    df = ibl_export_subset(root, n_subjects=3, max_biased_sessions=9)
    names = list(dict.fromkeys(df["subject"]))
    kept = df[(df["subject"] == names[2]) | (df["session"] <= 5)]
    store = TwinStore(root / "store")
    SessionStore(store).add_table(kept)
    twins = kept[kept["subject"].isin(names[:2]) & (kept["trial"] <= 150)]  # a quick twin: the stage comes from the stored sessions
    cfg = CohortFitConfig(spec=ModelSpec("static"), fit=FitConfig(epochs=2, patience=2), adaptation=Adaptation.INITIAL_WEIGHTS)
    fit_cohort(twins, store, cfg, progress=False)
    store.close()
    return root / "store", names


PROPOSER = optimizer_proposer(config=ProposalConfig(n_candidates=2, n_rollouts=2, horizon_sessions=2, forecast_rollouts=8))


def test_next_session_on_trained_real_mice_is_the_next_stage_plan(real_store):
    root, subjects = real_store
    plane = build_plane(root, config=FAST_UPDATE, propose=PROPOSER)
    for s in subjects[:2]:
        plan = plane.curricula.next_session(NextSessionRequest(TwinSelector(s), n_rollouts=20))
        assert plan.stage is not None and plan.stage.stage.trained and plan.stage.biased_session == 4, plan.stage
        assert plan.target is READY_FOR_RECORDING and plan.protocol.stimulus == IBL_BIASED.stimulus and plan.start_phase == 0
        assert plan.expected_trials is None and plan.max_sessions is None  # no trials-to-criterion figure for a criterion the twins do not simulate
        assert "ready_for_recording" in plan.explanation and "trials to criterion" not in plan.explanation and plan.forecast is not None
        msg = plan_pb(plan)
        assert msg.stage == cs.TRAINING_STAGE_BIASED and msg.target_criterion == "ready_for_recording"
        assert "bias shift" in msg.target_criterion_description and msg.max_sessions == 0 and not msg.HasField("expected_trials_to_target")
        assert "biased blocks at session 4" in msg.stage_summary
        out = plan.protocol.export(IBLRIG_BIASED, plan.start_phase, plan.n_trials)  # what stock iblrig runs
        assert out["task"] == "_iblrig_tasks_biasedChoiceWorld"
    # ready for recording (no twin): biased blocks again, no criterion left, no trials-to-criterion claim
    plan = plane.curricula.next_session(NextSessionRequest(TwinSelector(subjects[2]), n_rollouts=20))
    assert plan.stage.stage is TrainingStage.READY_FOR_RECORDING and plan.stage.ready_session == 6 and plan.target is None
    assert plan.protocol.stimulus == IBL_BIASED.stimulus and plan.expected_trials is None and "ready for recording" in plan.explanation
    msg = plan_pb(plan)
    assert msg.stage == cs.TRAINING_STAGE_READY_FOR_RECORDING and msg.target_criterion == "" and msg.fallback_reason == cs.FALLBACK_REASON_NO_TWIN
    plane.jobs.shutdown()


def test_next_session_rpc_names_the_stage_and_criterion(real_store):
    root, subjects = real_store
    plane = build_plane(root, config=FAST_UPDATE, propose=PROPOSER)
    running = start_server(ServerConfig(address="127.0.0.1:0", auth=AuthConfig.from_tokens(TOKENS), grace_s=2.0), plane)
    try:
        with TwinClient(running.target, RIG) as c:
            plan = c.next_session(subjects[0], n_rollouts=20)
            new = c.next_session("never-seen-mouse", n_rollouts=20)
    finally:
        running.stop()
    assert plan.stage == cs.TRAINING_STAGE_BIASED and plan.target_criterion == "ready_for_recording"
    assert len(plan.protocol.phases) == 1 and plan.fallback_reason == cs.FALLBACK_REASON_NONE
    assert new.stage == cs.TRAINING_STAGE_TRAINING and new.target_criterion == "trained_1a" and new.fallback_reason == cs.FALLBACK_REASON_NO_TWIN
