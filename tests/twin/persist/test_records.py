"""Typed metadata of a stored twin version, and its JSON in the database."""

from __future__ import annotations

from twin.models.learner import ModelSpec
from twin.models.params import Adaptation
from twin.persist.records import TwinHyperparameters, TwinMetrics


def test_hyperparameters_round_trip_and_write_the_keys_that_are_set():
    h = TwinHyperparameters(spec=ModelSpec("dnn"), fit={"epochs": 5, "learning_rate": None}, adaptation=Adaptation.FULL, warm_start_from=3)
    js = h.to_json()
    assert js == {"spec": ModelSpec("dnn").to_dict(), "fit": {"epochs": 5, "learning_rate": None}, "adaptation": "full", "warm_start_from": 3}
    assert TwinHyperparameters.from_json(js) == h
    assert TwinHyperparameters().to_json() == {} and TwinHyperparameters.from_json({}) == TwinHyperparameters()
    assert TwinHyperparameters.from_json({"adaptation": "w0", "hidden": 32}) == TwinHyperparameters(adaptation=Adaptation.INITIAL_WEIGHTS)


def test_metrics_round_trip():
    m = TwinMetrics(val_ll=-0.5, population_val_ll=-0.6)
    assert m.to_json() == {"val_ll": -0.5, "population_val_ll": -0.6} and TwinMetrics.from_json(m.to_json()) == m
    assert TwinMetrics(val_ll=-0.5).to_json() == {"val_ll": -0.5} and TwinMetrics.from_json({}) == TwinMetrics()


def test_metrics_keep_the_fits_warnings_in_the_record_only():
    m = TwinMetrics(val_ll=-0.5, warnings=("best epoch 2 is the epoch cap 2",))
    assert m.to_json() == {"val_ll": -0.5}  # the numeric map the service carries
    assert m.to_record() == {"val_ll": -0.5, "warnings": ["best epoch 2 is the epoch cap 2"]}
    assert TwinMetrics.from_json(m.to_record()) == m
    assert TwinMetrics(val_ll=-0.5).to_record() == {"val_ll": -0.5}  # rows without warnings look as before
    assert TwinMetrics.from_json({"val_ll": -0.5, "warnings": "not a list"}).warnings == ()
