"""The engine gives exactly the outputs of the engine it replaced (commit 4d0546c) on fixed seeds:
static, DNN, RNN and REINFORCE learners, with and without history features and learning-rate
multipliers, several protocols in one batch (debiasing both ways, biased blocks, performance and
trial-by-trial table.

Exactly means: every discrete output (choices, rewards, stimuli, phases, counts) bit for bit, and
every float to within a few units in the last place. The float parts (``p_right``, weights) come
from torch's vectorised ``exp``/``sigmoid``, whose last bit depends on the CPU's SIMD path: the
golden file, written on one machine, differs by one float32 ulp (≤ 1.2e-7) on an AMD EPYC host,
with every choice the same."""

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
    bad = [k for k in keys if not (golden[k].dtype == now[k].dtype and _same(golden[k], now[k]))]
    assert not bad, f"outputs differ from the golden engine: {bad}"


def _same(golden: torch.Tensor, now: torch.Tensor) -> bool:
    """Bit for bit, except floats: within 8 float32 ulps of their magnitude (CPU-dependent libm)."""
    if not golden.is_floating_point() or golden.shape != now.shape:
        return torch.equal(golden, now)
    ulp = torch.finfo(torch.float32).eps
    return bool(torch.equal(golden.isnan(), now.isnan()) and torch.allclose(golden, now, rtol=8 * ulp, atol=8 * ulp, equal_nan=True))


def test_float_tolerance_is_a_few_ulps_and_discrete_outputs_stay_exact() -> None:
    x = torch.tensor([0.5, 0.25, 3.0])
    assert _same(x, x + torch.tensor([1.2e-7, 0.0, 2.4e-7]))  # a last-bit difference
    assert not _same(x, x + torch.tensor([1e-5, 0.0, 0.0]))  # a real difference
    assert not _same(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]))
