"""``LearningRule.step_into`` (the buffered step the simulation loop calls) gives exactly
:meth:`step`'s results for every registered rule, step after step, with its buffers reused."""

from __future__ import annotations

import pytest
import torch

from twin.data.features import FeatureSpec, StimulusCoding
from twin.models.rules import UpdateInputs, make_config, make_rule, rule_names


@pytest.mark.parametrize("name", rule_names())
@pytest.mark.parametrize("batch", [1, 37])
def test_step_into_is_step(name: str, batch: int) -> None:
    torch.manual_seed(3)
    opts = {"hidden_size": 8} if name in ("dnn", "rnn") else {}
    rule = make_rule(name, 3, make_config(name, **opts) if opts else None)
    if rule.needs_mirror:
        rule.use_mirror(FeatureSpec(stimulus=StimulusCoding.SPLIT).mirror())
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in rule.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
        ctx = rule.context()
        w = torch.randn(batch, 3, generator=g)
        h = torch.randn(batch, rule.state_size, generator=g) * 0.3
        w_ref, h_ref = w.clone(), h.clone()
        work: dict[str, torch.Tensor] = {}
        for t in range(6):
            y = (torch.rand(batch, 1, generator=g) < 0.5).float()
            inp = UpdateInputs(torch.randn(batch, 1, 3, generator=g), y, y.flip(0), y, torch.zeros(batch, 1))
            pre = rule.precompute(inp)[0]
            w_ref, h_ref = rule.step(w_ref, h_ref, pre, ctx)
            w, h = rule.step_into(w, h, pre, ctx, work, t % 2)
            assert torch.equal(w, w_ref) and torch.equal(h, h_ref), t
