"""The optimizer behind the service: NextSession proposals and SearchCurricula operations run
the real optimizer through a server on 127.0.0.1."""

from __future__ import annotations

import pytest

pytest.importorskip("grpc")

from server_env import ADMIN, RIG, TWIN_SUBJECTS  # noqa: E402
from optimizer.propose import ProposalConfig  # noqa: E402
from optimizer.search import SearchConfig  # noqa: E402
from optimizer.space import Constraints, CurriculumSpace  # noqa: E402
from twin_client.client import TwinClient, operation_metadata, operation_result  # noqa: E402
from service.optimizer_bridge import optimizer_proposer, optimizer_search  # noqa: E402
from twin_proto.pb import curriculum_service_pb2, operation_pb2  # noqa: E402
from twin.persist.store import ResultKind, TwinStore  # noqa: E402

SPACE = CurriculumSpace(Constraints(session_trials=(300, 700)))


def test_next_session_comes_from_the_optimizer(serve):
    propose = optimizer_proposer(SPACE, ProposalConfig(n_candidates=3, n_rollouts=4, horizon_sessions=4, forecast_rollouts=16))
    running = serve(propose=propose)
    with TwinClient(running.target, RIG) as c:
        plan = c.next_session(TWIN_SUBJECTS[0], n_rollouts=40)
    assert plan.source == curriculum_service_pb2.PLAN_SOURCE_OPTIMIZER and not plan.fallback
    assert "expected" in plan.explanation or "fewer" in plan.explanation
    # two sessions stored: in training, aimed at trained_1a, trials to it forecast within the proposer's 4-session cap
    assert plan.stage == curriculum_service_pb2.TRAINING_STAGE_TRAINING and plan.target_criterion == "trained_1a"
    assert plan.max_sessions == 4 and plan.HasField("expected_trials_to_target") and "capped at 4 sessions" in plan.explanation
    assert "trials to trained_1a" in plan.explanation
    assert f"horizon of {plan.max_sessions} sessions" in plan.explanation
    assert all(c.axis and c.description and (c.kept or c.reason) for c in plan.changes)
    # the per-family speed-ups come with a kept change, over the proposer's rollouts, within its cap
    assert bool(plan.family_speedups) == any(c.kept for c in plan.changes)
    assert all(f.family and 0 < f.n_units <= 4 and f.interval_level == pytest.approx(0.9) and f.speedup.lo <= f.speedup.mean <= f.speedup.hi for f in plan.family_speedups)
    assert sum(f.n_units for f in plan.family_speedups) in (0, 4)
    assert 300 <= plan.n_trials <= 1000 and plan.HasField("forecast")
    assert sum(c.proportion for c in plan.contrasts) == pytest.approx(1.0)


def test_search_curricula_runs_the_optimizer_and_stores_the_result(serve, store_dir):
    search = optimizer_search(SPACE, SearchConfig(n_trials=4, batch_size=2, n_rollouts=1, max_sessions=4, rescore_top=1, rescore_rollouts=1))
    running = serve(search=search)
    with TwinClient(running.target, ADMIN) as c:
        op = c.search_curricula(list(TWIN_SUBJECTS[:2]), seed=5)
        done = c.wait_operation(op.name, timeout_s=300)
    assert operation_metadata(done).state == operation_pb2.OPERATION_STATE_SUCCEEDED, done
    res = operation_result(done)
    assert 1 <= len(res.candidates) <= 2 and res.baseline.trials_to_criterion.mean > 0  # the minimal proposal first, then the re-scored top one unless it is the same
    assert res.candidates[0].protocol.phases and 0 <= res.baseline.reached_criterion <= 1
    # the attribution, the criterion and the one sessions cap travel with the result
    assert res.criterion == "trained_1a" and res.max_sessions == 4
    assert all(c.axis and c.description and c.reason for c in res.changes)
    assert bool(res.family_speedups) <= any(c.kept for c in res.changes)  # per-family figures only for a proposal that changes something
    assert all(f.family and f.n_units > 0 for f in res.family_speedups)
    stored = TwinStore(store_dir).get_result(ResultKind.CURRICULUM_SEARCH, "grpc-5")
    assert stored.payload["default"]["curriculum"]["name"] == "ibl-default"
    running.stop(grace_s=2.0)
    with TwinClient(serve(search=search).target, ADMIN) as c:  # the optimizer's curricula survive a restart
        assert operation_result(c.get_operation(op.name)) == res


class _Quiet:
    def report(self, fraction: float, message: str) -> None:
        pass


def test_a_search_for_a_stock_iblrig_rig_proposes_only_what_it_runs(store_dir):
    from optimizer.planning import CurriculumSearchRequest
    from server.convert import protocol_from_pb, protocol_pb
    from twin.protocol import IBLRIG_TRAINING

    search = optimizer_search(SPACE, SearchConfig(n_trials=3, batch_size=3, n_rollouts=1, max_sessions=3, rescore_top=2, rescore_rollouts=1))
    req = CurriculumSearchRequest(tuple(TWIN_SUBJECTS[:2]), 3, None, 7, IBLRIG_TRAINING)
    out = search(req, TwinStore(store_dir), _Quiet())
    assert out.candidates
    for cand in out.candidates:
        IBLRIG_TRAINING.check(cand.protocol)  # raises naming the field it cannot run
        assert protocol_from_pb(protocol_pb(cand.protocol)).stimulus == cand.protocol.stimulus
