"""The compiled wire-format reader of Trial messages against the protobuf API, field by field."""

from __future__ import annotations

import math

import numpy as np
import pytest

from server import wire
from twin_proto.pb import common_pb2, twin_service_pb2


def _trials(n: int, seed: int) -> list[common_pb2.Trial]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        t = common_pb2.Trial(
            session=int(rng.integers(0, 2**32 - 1)) if i == 3 else 1 + i // 50,
            trial=1 + i % 50,
            contrast_left=float(rng.random()) if i % 2 else 0.0,
            contrast_right=float(rng.random()) if not i % 2 else 0.0,
            choice=int(rng.choice([0, 1, 2, 7, -5])),
            feedback=int(rng.choice([0, 1, 2, -2147483648])),
            correct_side=int(rng.choice([1, 2])),
            prob_left=float(rng.choice([0.2, 0.5, 0.8, -0.0, math.inf, math.nan])),
        )
        if i % 3 == 0:
            t.reaction_time = float(rng.choice([0.0, 0.4, -1.0, math.nan]))
        out.append(t)
    return out


@pytest.mark.parametrize("n", [1, 7, 400])
def test_decoder_reads_what_the_protobuf_api_reads(n):
    msg = twin_service_pb2.SuppliedHistory(trials=_trials(n, seed=n), continue_from_twin=True)
    got = wire.trial_table(msg)
    assert wire.HAVE_NUMBA
    assert got.shape == (n, len(wire.COLUMNS))
    np.testing.assert_array_equal(got, wire.trial_table_of(msg.trials))  # NaN == NaN here


def test_unset_reaction_time_is_nan_and_set_zero_is_kept():
    msg = twin_service_pb2.SuppliedHistory(trials=[common_pb2.Trial(trial=1), common_pb2.Trial(trial=2, reaction_time=0.0)])
    rt = wire.trial_table(msg)[:, wire.COLUMNS.index("reaction_time")]
    assert math.isnan(rt[0]) and rt[1] == 0.0


def test_unknown_fields_are_skipped():
    base = common_pb2.Trial(session=2, trial=3, contrast_left=0.25, choice=common_pb2.SIDE_LEFT, feedback=common_pb2.FEEDBACK_REWARDED, correct_side=common_pb2.SIDE_LEFT, prob_left=0.5)
    # fields 10 (varint), 11 (length-delimited), 12 (fixed32), 13 (fixed64): unknown to Trial
    extra = bytes([10 << 3 | 0, 0x96, 0x01, 11 << 3 | 2, 3, 1, 2, 3, 12 << 3 | 5, 0, 0, 0, 0, 13 << 3 | 1, *([0] * 8)])
    t = common_pb2.Trial.FromString(base.SerializeToString() + extra)
    msg = twin_service_pb2.SuppliedHistory(trials=[t, base])
    got = wire.trial_table(msg)
    np.testing.assert_array_equal(got, wire.trial_table_of(msg.trials))
    assert got[0, 0] == 2 and got[0, 2] == 0.25


def test_empty():
    assert wire.trial_table(twin_service_pb2.SuppliedHistory()).shape == (0, len(wire.COLUMNS))


@pytest.mark.parametrize("top", [1, 127, 128, 16_383, 16_384, 2**21, 2**32 - 1])
@pytest.mark.parametrize("n", [0, 1, 7, 1000])
def test_packed_fields_are_the_messages_the_api_builds(top: int, n: int) -> None:
    """Columns written as packed wire bytes parse into exactly the message that setting each
    list through the protobuf API builds (varints of every length, NaN, non-ASCII names)."""
    rng = np.random.default_rng(top + n)
    session, trial = rng.integers(0, top + 1, n), rng.integers(0, top + 1, n)
    p = rng.random(n)
    p[: min(n, 2)] = np.nan
    w = rng.normal(size=(n, 3))
    names = ["stimulus", "bias", "é"]
    head = dict(twin=common_pb2.TwinVersion(subject="a"), log_likelihood=-1.5, n_trials=n)
    expected = twin_service_pb2.PredictResponse(
        **head, session=session.tolist(), trial=trial.tolist(), p_right=p.tolist(),
        weights=[twin_service_pb2.WeightTrajectory(feature=f, values=w[:, k].tolist()) for k, f in enumerate(names)],
    )
    fields = wire.PackedFields(twin_service_pb2.PredictResponse.DESCRIPTOR).unsigned("session", session).unsigned("trial", trial).doubles("p_right", p)
    for k, f in enumerate(names):
        fields.message("weights", wire.PackedFields(twin_service_pb2.WeightTrajectory.DESCRIPTOR).string("feature", f).doubles("values", w[:, k]))
    got = twin_service_pb2.PredictResponse(**head)
    got.MergeFromString(fields.bytes())
    assert got.SerializeToString(deterministic=True) == expected.SerializeToString(deterministic=True)


def test_packed_unsigned_refuses_negative_values() -> None:
    with pytest.raises(ValueError, match="negative"):
        wire.PackedFields(twin_service_pb2.PredictResponse.DESCRIPTOR).unsigned("session", np.array([1, -2]))
