"""Simulation: reproducibility, a valid canonical table, weights consistent with the model, learning,
and file round trips (canonical parquet/CSV and an IBL ALF-style table)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from twin.sim.agents import DEFAULT_TRUTHS, Family
from twin.data.batch import make_batch
from twin.data.readers import load_trials, write_trials
from twin.data.features import FeatureSpec
from twin.data.ibl import read_alf_trials
from twin.models.learner import LearnerModel, ModelSpec
from twin.models.rules import NetworkConfig
from twin.sim.simulate import simulate
from twin.protocol import IBL_DEFAULT, Curriculum
from twin.data.trials import REQUIRED_COLUMNS, validate_trials

SHORT = Curriculum(session_trials=(40, 80))


@pytest.fixture(scope="module")
def sim():
    return simulate(DEFAULT_TRUTHS[Family.REINFORCE].build(), SHORT, 4, 300, seed=11)


def test_deterministic_for_a_seed_and_different_across_seeds():
    model = DEFAULT_TRUTHS[Family.ASYMMETRIC].build()
    a = simulate(model, SHORT, 3, 200, seed=5)
    b = simulate(model, SHORT, 3, 200, seed=5)
    c = simulate(model, SHORT, 3, 200, seed=6)
    pd.testing.assert_frame_equal(a.trials, b.trials)
    assert torch.equal(a.weights, b.weights) and torch.equal(a.phase, b.phase)
    assert not a.trials["choice"].equals(c.trials["choice"])
    assert not a.trials["session"].equals(c.trials["session"])  # the schedule is seeded too


def test_output_is_a_valid_canonical_table(sim):
    df = sim.trials
    assert list(df.columns) == list(REQUIRED_COLUMNS)
    assert len(df) == 4 * 300
    out = validate_trials(df, source="sim")
    pd.testing.assert_frame_equal(out, df)
    assert df["subject"].unique().tolist() == [f"sim-{i:03d}" for i in range(4)]
    assert set(df["prob_left"].unique()) <= {0.0, 0.5, 1.0}  # 0/1 on debiasing repeats


def test_sessions_and_trials_numbering(sim):
    df = sim.trials
    for subj, g in df.groupby("subject", sort=False):
        sess, trial = g["session"].to_numpy(), g["trial"].to_numpy()
        assert sess[0] == 1 and trial[0] == 1
        assert set(np.diff(sess)) <= {0, 1}  # consecutive sessions
        new = np.r_[True, np.diff(sess) == 1]
        assert np.all(trial[new] == 1)
        assert np.all(np.diff(trial)[~new[1:]] == 1)
        lengths = g.groupby("session").size().to_numpy()
        assert np.all((lengths[:-1] >= 40) & (lengths[:-1] <= 80)), subj
        assert sess.max() >= 4


def test_weights_start_at_w0_and_match_teacher_forcing(sim):
    truth = DEFAULT_TRUTHS[Family.REINFORCE].build()
    assert sim.weights.shape == (4, 300, 2)
    assert torch.equal(sim.weights[:, 0], truth.w0.expand(4, -1))
    assert not torch.allclose(sim.weights[:, -1], sim.weights[:, 0])
    assert sim.phase.shape == (4, 300) and sim.phase.dtype == torch.long
    w0 = torch.tensor([[0.5, -0.2], [1.0, 0.0], [0.0, 0.3], [-0.5, 0.1]])
    own = simulate(truth, SHORT, 4, 50, seed=1, w0=w0)
    assert torch.equal(own.weights[:, 0], w0)


@pytest.mark.parametrize(
    "make",
    [
        lambda: DEFAULT_TRUTHS[Family.REINFORCE].build(),
        lambda: DEFAULT_TRUTHS[Family.HISTORY].build(),
        lambda: DEFAULT_TRUTHS[Family.ASYMMETRIC].build(),
        lambda: LearnerModel(ModelSpec("rnn", FeatureSpec(), NetworkConfig(hidden_size=8, scale_init=0.05))),
        lambda: LearnerModel(ModelSpec("dnn", FeatureSpec(history=True), NetworkConfig(hidden_size=8, scale_init=0.05))),
    ],
    ids=["reinforce", "history", "asymmetric", "rnn", "dnn-history"],
)
def test_simulated_weights_equal_the_model_trajectory_on_the_data(make):
    """The generative loop and the teacher-forced trajectory see the same inputs, session
    flags and history regressors, so they give the same weights."""
    torch.manual_seed(0)
    model = make().eval()
    with torch.no_grad():
        model.w0.copy_(torch.tensor([0.8, -0.3] + [0.2] * (model.n_weights - 2)))
    s = simulate(model, SHORT, 3, 250, seed=2)
    batch = make_batch(s.trials, model.spec.features)
    with torch.no_grad():
        w = model.trajectory(batch)
    torch.testing.assert_close(w, s.weights, rtol=0, atol=1e-5)


def test_learning_truth_improves_accuracy():
    sim = simulate(DEFAULT_TRUTHS[Family.REINFORCE].build(), IBL_DEFAULT, 6, 3000, seed=0)
    df = sim.trials
    ok = (df["choice"] == df["correct_side"]).to_numpy().reshape(6, 3000)
    first, last = ok[:, :500].mean(), ok[:, -500:].mean()
    assert last > first + 0.05, (first, last)
    assert (ok[:, -500:].mean(1) > ok[:, :500].mean(1)).all()
    # the stimulus weight grows
    assert (sim.weights[:, -1, 0] > sim.weights[:, 0, 0] + 0.3).all()
    assert (sim.phase[:, -1] > 0).all()  # and the animals advance in the curriculum


# --------------------------------------------------------------------------------------------
# files


@pytest.mark.parametrize("suffix", [".parquet", ".pqt", ".csv"])
def test_canonical_file_round_trip(sim, tmp_path, suffix):
    path = write_trials(sim.trials, tmp_path / "sub" / f"cohort{suffix}")
    assert path.exists()
    back, report = load_trials(path)
    assert report.n_rows == len(sim.trials) and report.total_nogo_dropped == 0
    pd.testing.assert_frame_equal(back, sim.trials, check_exact=True)


def to_alf(df: pd.DataFrame, nogo_every: int = 0) -> pd.DataFrame:
    """Canonical -> IBL ALF-style trials (NaN on the unused side, choice -1 = right)."""
    side = df["correct_side"].to_numpy()
    alf = pd.DataFrame(
        {
            "subject": df["subject"].to_numpy(),
            "session": [f"{s}-{k:02d}" for s, k in zip(df["subject"], df["session"])],
            "contrastLeft": np.where(side == 0, df["contrast_left"], np.nan),
            "contrastRight": np.where(side == 1, df["contrast_right"], np.nan),
            "choice": np.where(df["choice"] == 1, -1, 1),
            "feedbackType": df["feedback"].to_numpy(),
            "probabilityLeft": df["prob_left"].to_numpy(),
        }
    )
    if nogo_every:
        extra = alf.iloc[::nogo_every].copy()
        extra["choice"] = 0
        extra["feedbackType"] = -1
        extra.index = extra.index - 0.5  # a timeout just before each chosen trial
        alf = pd.concat([alf, extra]).sort_index().reset_index(drop=True)
    return alf


@pytest.mark.parametrize("suffix", [".pqt", ".csv"])
def test_alf_round_trip(sim, tmp_path, suffix):
    alf = to_alf(sim.trials, nogo_every=37)
    assert np.isnan(alf["contrastLeft"]).any() and np.isnan(alf["contrastRight"]).any()
    path = tmp_path / f"trials{suffix}"
    if suffix == ".csv":
        alf.to_csv(path, index=False)
    else:
        alf.to_parquet(path, index=False)
    n_nogo = int((alf["choice"] == 0).sum())
    assert n_nogo > 0
    for reader in (read_alf_trials, load_trials):
        back, report = reader(path)
        assert report.total_nogo_dropped == n_nogo
        assert report.n_rows == len(alf)
        pd.testing.assert_frame_equal(back[list(REQUIRED_COLUMNS)], sim.trials, check_exact=True)
        labels = back.groupby(["subject", "session"])["session_label"].first()
        assert labels.loc[("sim-001", 2)] == "sim-001-02"
