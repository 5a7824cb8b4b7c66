"""The engine gives exactly the outputs of the engine it replaced (commit 4d0546c) on fixed seeds:
static, DNN, RNN and REINFORCE learners, with and without history features and learning-rate
multipliers, several protocols in one batch (debiasing both ways, biased blocks, performance and
trial-count advancement, start phases), session plans with per-session protocols, and the
trial-by-trial table."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import golden_engine


@pytest.fixture(scope="module")
def golden() -> dict[str, torch.Tensor]:
    return load_file(str(golden_engine.FIXTURE))


@pytest.fixture(scope="module")
def now() -> dict[str, torch.Tensor]:
    return golden_engine.cases()


def test_same_cases(golden: dict[str, torch.Tensor], now: dict[str, torch.Tensor]) -> None:
    assert sorted(golden) == sorted(now)


@pytest.mark.parametrize("rule", golden_engine.RULES)
def test_identical_outputs(rule: str, golden: dict[str, torch.Tensor], now: dict[str, torch.Tensor]) -> None:
    keys = [k for k in golden if k.split("/")[1].startswith(rule + "_h")]
    assert keys
    bad = [k for k in keys if not (golden[k].dtype == now[k].dtype and torch.equal(golden[k], now[k]))]
    assert not bad, f"outputs differ from the golden engine: {bad}"
