"""A twin's state at the end of its animal's last session: where it continues from.

A learning rule carries two things from trial to trial: the policy weights ``w`` and, for
history-dependent rules, a recurrent state ``h``. Running the twin teacher-forced through all of
its animal's trials, and applying the update out of the last trial as an overnight one (the next
trial opens a new session), gives the ``(w, h)`` that the animal's next session starts from.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from twin.data.batch import make_batch
from twin.errors import TwinError
from twin.models.learner import LearnerModel
from twin.models.rules import UpdateInputs


@dataclass(frozen=True)
class TwinState:
    """Where a twin continues from.

    Attributes:
        w: ``[K]`` policy weights for the first trial of the next session.
        h: ``[H]`` recurrent state of the rule (``H`` may be 0).
        through_session: the last session consumed.
        phase: the protocol phase the animal was in on its last trial (0 when unknown).
    """

    w: torch.Tensor
    h: torch.Tensor
    through_session: int
    phase: int = 0

    def tensors(self) -> dict[str, torch.Tensor]:
        """The tensors, keyed for a safetensors file."""
        return {"state.w": self.w.detach().cpu().contiguous(), "state.h": self.h.detach().cpu().contiguous()}


@torch.no_grad()
def end_state(model: LearnerModel, trials: pd.DataFrame, phase: int = 0) -> TwinState:
    """Run ``model`` teacher-forced through one animal's trials and return its end state.

    Args:
        model: the animal's twin.
        trials: canonical trials table of exactly one subject (all its sessions, in order).
        phase: protocol phase the animal ended in (carried, not inferred).

    Returns:
        The state after the last trial, the overnight update included.

    Raises:
        TwinError: if the table is empty or holds several subjects.
    """
    names = trials["subject"].unique() if len(trials) else []
    if len(names) != 1:
        raise TwinError(f"end_state needs the trials of exactly one subject, got {len(names)}")
    batch = make_batch(trials, model.spec.features)
    inp = UpdateInputs.from_trials(batch.x, batch.y, batch.reward, batch.answer, batch.session_start)
    nss = inp.next_session_start.clone()
    nss[:, -1] = 1.0
    inp = UpdateInputs(inp.x, inp.y, inp.reward, inp.answer, nss)
    pre = model.rule.precompute(inp)
    w, h = model.initial(1)
    ws, h = model.rollout(w, h, pre)
    return TwinState(w=ws[-1, 0].clone(), h=h[0].clone(), through_session=int(trials["session"].max()), phase=int(phase))


__all__ = ["TwinState", "end_state"]
