"""Policy features: the left/right mirror of every contrast coding."""

from __future__ import annotations

import pytest
import torch

from twin.data.features import FeatureSpec, StimulusCoding

SPECS = [
    FeatureSpec(),
    FeatureSpec(stimulus=StimulusCoding.SPLIT),
    FeatureSpec(history=True),
    FeatureSpec(stimulus=StimulusCoding.SPLIT, bias=False, history=True),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: "-".join(s.names))
def test_mirror_is_the_features_of_the_mirrored_trial_and_flips_the_policy(spec):
    g = torch.Generator().manual_seed(0)
    n = 50
    right = torch.rand(n, generator=g) < 0.5
    c = torch.rand(n, generator=g)
    cl, cr = torch.where(right, 0.0, c), torch.where(right, c, 0.0)
    prev_choice = torch.randint(-1, 2, (n,), generator=g).float()
    prev_reward = torch.randint(0, 2, (n,), generator=g).float()
    x = spec.compute(cl, cr, prev_choice, prev_reward)
    mirrored_trial = spec.compute(cr, cl, -prev_choice, prev_reward)  # sides swapped
    m = spec.mirror()
    torch.testing.assert_close(m.features(x), mirrored_trial)
    w = torch.randn(n, spec.n_features, generator=g)
    # the mirrored animal chooses left exactly as often as the original chooses right
    torch.testing.assert_close((m.weights(w) * m.features(x)).sum(-1), -(w * x).sum(-1))
    # each map is its own inverse
    torch.testing.assert_close(m.features(m.features(x)), x)
    torch.testing.assert_close(m.weights(m.weights(w)), w)


def test_signed_stimulus_weight_stays_and_bias_weight_flips():
    m = FeatureSpec().mirror()
    torch.testing.assert_close(m.weights(torch.tensor([2.0, 0.5])), torch.tensor([2.0, -0.5]))
    torch.testing.assert_close(m.features(torch.tensor([0.3, 1.0])), torch.tensor([-0.3, 1.0]))


def test_named_stimuli_have_no_mirror():
    with pytest.raises(ValueError, match="no known left/right mirror"):
        FeatureSpec(stimuli=("tone_a", "tone_b")).mirror()
