"""Named-stimulus data: the shared Akrami rat, generic tables and npz archives, the
``FeatureSpec(stimuli=...)`` features, and fitting static and REINFORCE models on the rat."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from twin.data.batch import make_batch
from twin.data.readers import load_trials, write_trials
from twin.errors import TrialDataError
from twin.analysis.evaluate import score
from twin.data.splits import split_sessions
from twin.data.features import FeatureSpec, StimulusCoding
from twin.fit.train import FitConfig, fit
from twin.data.generic import (
    PSYTRACK_RAT_FILENAME,
    PSYTRACK_RAT_LAYOUT,
    NamedStimulusLayout,
    SideCodes,
    StimulusInput,
    feature_spec_for,
    read_named_stimuli,
    read_psytrack_rat,
    stimulus_names,
)
from twin.data.paths import shared_data_dir
from twin.models.learner import ModelSpec

RAT_FEATURES = FeatureSpec(stimuli=("s_a", "s_b"))


def _rat_path() -> Path | None:
    try:
        path = shared_data_dir() / "ibl" / PSYTRACK_RAT_FILENAME
    except FileNotFoundError:
        return None
    return path if path.exists() else None


needs_rat = pytest.mark.skipif(_rat_path() is None, reason="shared rat file psytrack_rat_W053_Akrami.npz not present")


@pytest.fixture(scope="module")
def rat():
    path = _rat_path()
    if path is None:
        pytest.skip("shared rat file not present")
    raw = np.load(path, allow_pickle=False)
    df, rep = read_psytrack_rat(path)
    return raw, df, rep


# --------------------------------------------------------------------------------------------
# the rat file


@needs_rat
def test_rat_file_loads_without_pickle(rat):
    raw, df, rep = rat
    assert set(raw.files) >= {"y", "answer", "correct", "dayLength", "name", "inputs_s1", "inputs_s2"}
    assert len(df) == 20000 and rep.n_rows == 20000 and rep.total_nogo_dropped == 0
    assert (df["subject"] == "W053").all()
    assert df["session"].max() == 80
    np.testing.assert_array_equal(df.groupby("session").size().to_numpy(), raw["dayLength"])
    assert (df.groupby("session")["trial"].first() == 1).all()
    # y: 1 = left, 2 = right -> canonical 1 = right
    np.testing.assert_array_equal(df["choice"].to_numpy(), (raw["y"] == 2).astype(int))
    np.testing.assert_array_equal(df["correct_side"].to_numpy(), (raw["answer"] == 2).astype(int))
    np.testing.assert_array_equal(df["feedback"].to_numpy() == 1, raw["correct"] == 1)
    np.testing.assert_array_equal(df["stim_s_a"].to_numpy(), raw["inputs_s1"][:, 0])
    np.testing.assert_array_equal(df["stim_s_b"].to_numpy(), raw["inputs_s2"][:, 0])
    # the README's rule: the answer is right exactly when s1 > s2
    assert ((df["stim_s_a"] > df["stim_s_b"]) == (df["correct_side"] == 1)).all()
    assert (df["contrast_left"] == 0).all() and (df["contrast_right"] == 0).all() and (df["prob_left"] == 0.5).all()
    assert stimulus_names(df) == ("s_a", "s_b")
    assert feature_spec_for(df) == RAT_FEATURES


@needs_rat
def test_rat_through_load_trials_and_a_round_trip(rat, tmp_path):
    _, df, _ = rat
    via, _ = load_trials(_rat_path())
    pd.testing.assert_frame_equal(via, df)
    # a canonical file keeps its stimulus columns
    part = df[df["session"] <= 3]
    path = write_trials(part, tmp_path / "rat.pqt")
    back, _ = load_trials(path)
    pd.testing.assert_frame_equal(back, part.reset_index(drop=True), check_dtype=False)


@needs_rat
def test_fit_static_and_reinforce_on_the_rat(rat):
    """Fit on sessions 1-9 (session 10 for early stopping), forecast 11-14, teacher-forced."""
    torch.set_num_threads(1)
    _, df, _ = rat
    batch = make_batch(df[df["session"] <= 14], RAT_FEATURES)
    assert batch.x.shape[-1] == 3 and batch.features.names == ("s_a", "s_b", "bias")
    split = split_sessions(batch, 10)
    chance = -math.log(2.0)
    static = fit(ModelSpec("static", RAT_FEATURES), split.train, split.val, FitConfig(epochs=30, patience=100), progress=False)
    s = score(static.model, split.test)
    assert s.n_trials > 1000
    assert math.isfinite(s.ll) and s.ll > chance + 0.02, s.ll
    w_a, w_b, _ = static.model.w0.tolist()
    assert w_a > 0 > w_b  # right (answer 2) when tone s1 > s2
    reinforce = fit(ModelSpec("reinforce", RAT_FEATURES), split.train, split.val, FitConfig(epochs=2, patience=100), progress=False)
    r = score(reinforce.model, split.test)
    assert math.isfinite(r.ll) and math.isfinite(reinforce.best_val_ll)


# --------------------------------------------------------------------------------------------
# generic sources


def named_table(n_sessions: int = 3, n: int = 40, seed: int = 0) -> pd.DataFrame:
    """Two tones, choice 'L'/'R' coded 0/1, session keys as dates, one no-response code 9."""
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n_sessions):
        a, b = rng.normal(size=n), rng.normal(size=n)
        answer = (a > b).astype(int)
        choice = np.where(rng.random(n) < 0.75, answer, 1 - answer)
        choice[5] = 9
        rows.append(pd.DataFrame({"rat": "R1", "day": f"2021-03-{k + 10:02d}", "tone_a": a, "tone_b": b, "resp": choice, "side": answer}))
    return pd.concat(rows, ignore_index=True)


TABLE_LAYOUT = NamedStimulusLayout(
    stimuli=(StimulusInput("a", "tone_a"), StimulusInput("b", "tone_b")),
    choice="resp",
    answer="side",
    codes=SideCodes(left=0, right=1),
    nogo=9,
    session="day",
    subject="rat",
)


@pytest.mark.parametrize("suffix", [".csv", ".pqt"])
def test_generic_table(tmp_path, suffix):
    raw = named_table()
    path = tmp_path / f"tones{suffix}"
    raw.to_csv(path, index=False) if suffix == ".csv" else raw.to_parquet(path, index=False)
    df, rep = read_named_stimuli(path, TABLE_LAYOUT)
    assert rep.n_nogo_dropped == {"R1": 3} and len(df) == 117
    assert df["session_label"].unique().tolist() == ["2021-03-10", "2021-03-11", "2021-03-12"]
    go = raw["resp"] != 9
    np.testing.assert_allclose(df["stim_a"].to_numpy(), raw.loc[go, "tone_a"].to_numpy())
    np.testing.assert_array_equal(df["choice"].to_numpy(), raw.loc[go, "resp"].to_numpy())
    batch = make_batch(df, FeatureSpec(stimuli=("a", "b"), history=True))
    assert batch.features.names == ("a", "b", "bias", "prev_choice", "prev_reward_side")
    np.testing.assert_allclose(batch.x[0, : len(df), 0].numpy(), df["stim_a"].to_numpy(), rtol=1e-6)


def test_generic_table_errors(tmp_path):
    raw = named_table()
    raw.loc[7, "resp"] = 3
    path = tmp_path / "t.csv"
    raw.to_csv(path, index=False)
    with pytest.raises(TrialDataError, match="unknown choice code 3") as ei:
        read_named_stimuli(path, TABLE_LAYOUT)
    assert (ei.value.source, ei.value.row, ei.value.column) == (str(path), 8, "resp")
    raw = named_table()
    raw.loc[11, "tone_b"] = np.nan
    raw.to_csv(path, index=False)
    with pytest.raises(TrialDataError, match="not a finite number") as ei:
        read_named_stimuli(path, TABLE_LAYOUT)
    assert (ei.value.row, ei.value.column) == (12, "tone_b")
    with pytest.raises(TrialDataError, match=r"missing column\(s\) \['y'"):
        read_named_stimuli(path, PSYTRACK_RAT_LAYOUT)


def rat_like_npz(path: Path, n: int = 60, lengths: tuple[int, ...] = (20, 25, 15), **override: np.ndarray) -> Path:
    rng = np.random.default_rng(0)
    s1, s2 = rng.normal(size=(n, 2)), rng.normal(size=(n, 2))
    answer = np.where(s1[:, 0] > s2[:, 0], 2, 1)
    y = np.where(rng.random(n) < 0.7, answer, 3 - answer).astype(float)
    arrays = {
        "y": y,
        "answer": answer,
        "correct": (y == answer).astype(float),
        "dayLength": np.array(lengths),
        "name": np.array("R9"),
        "inputs_s1": s1,
        "inputs_s2": s2,
    }
    arrays.update(override)
    np.savez(path, **arrays)
    return path


def test_npz_errors(tmp_path):
    good = rat_like_npz(tmp_path / "ok.npz")
    df, _ = read_named_stimuli(good)
    assert df.groupby("session").size().tolist() == [20, 25, 15] and (df["subject"] == "R9").all()
    bad = rat_like_npz(tmp_path / "len.npz", lengths=(20, 20))
    with pytest.raises(TrialDataError, match="add up to 40 trials but there are 60") as ei:
        read_named_stimuli(bad)
    assert ei.value.column == "dayLength"
    y = np.ones(60)
    y[9] = 0
    bad = rat_like_npz(tmp_path / "y.npz", y=y)
    with pytest.raises(TrialDataError, match="unknown choice code 0") as ei:
        read_named_stimuli(bad)
    assert (ei.value.row, ei.value.column) == (10, "y")
    rng = np.random.default_rng(0)
    wrong = (rng.random(60) < 0.5).astype(float)
    with pytest.raises(TrialDataError, match="does not match y == answer") as ei:
        read_named_stimuli(rat_like_npz(tmp_path / "c.npz", correct=wrong))
    assert ei.value.column == "correct"


def test_pickled_npz_is_refused(tmp_path):
    path = tmp_path / "pickled.npz"
    np.savez(path, D=np.array([{"y": [1, 2]}], dtype=object), y=np.ones(3))
    layout = NamedStimulusLayout(stimuli=(StimulusInput("s", "D"),), choice="y", answer="D")
    with pytest.raises(TrialDataError, match="unpickling it, which is refused") as ei:
        read_named_stimuli(path, layout, subject="x")
    assert (ei.value.source, ei.value.column) == (str(path), "D")


# --------------------------------------------------------------------------------------------
# features


def test_feature_spec_with_named_stimuli():
    spec = FeatureSpec(stimuli=("s_a", "s_b"), history=True)
    assert spec.names == ("s_a", "s_b", "bias", "prev_choice", "prev_reward_side")
    assert spec.stimulus_columns == ("stim_s_a", "stim_s_b")
    assert FeatureSpec.from_dict(spec.to_dict()) == spec
    # older stored specs have no "stimuli" key, and contrast specs still write none
    assert FeatureSpec.from_dict({"stimulus": "signed", "bias": True, "history": False}) == FeatureSpec()
    assert "stimuli" not in FeatureSpec().to_dict()
    assert ModelSpec.from_dict(ModelSpec("reinforce", spec).to_dict()).features == spec
    for bad in (("a b",), ("x", "x"), ("bias",), ("",)):
        with pytest.raises(ValueError):
            FeatureSpec(stimuli=bad)
    with pytest.raises(ValueError, match="contrast coding"):
        FeatureSpec(stimulus=StimulusCoding.SPLIT, stimuli=("a",))
    x = spec.compute(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3), stimuli=torch.ones(2, 3, 2) * 0.5)
    assert x.shape == (2, 3, 5) and (x[..., :2] == 0.5).all() and (x[..., 2] == 1).all()
    with pytest.raises(ValueError, match="need `stimuli`"):
        spec.compute(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3))


def test_make_batch_needs_the_stimulus_columns(tmp_path):
    df, _ = read_named_stimuli(rat_like_npz(tmp_path / "ok.npz"))
    with pytest.raises(TrialDataError, match=r"lacks column\(s\) \['stim_s_c'\]"):
        make_batch(df, FeatureSpec(stimuli=("s_a", "s_c")))
    df.loc[4, "stim_s_b"] = np.inf
    with pytest.raises(TrialDataError, match="not a finite number") as ei:
        make_batch(df, RAT_FEATURES)
    assert (ei.value.row, ei.value.column) == (5, "stim_s_b")
    # the contrast features ignore the extra columns
    assert make_batch(df, FeatureSpec()).x.shape[-1] == 2
