"""Constants shared by the server tests and their fixtures (tokens, subjects, fast settings)."""

from __future__ import annotations

from server.auth import Role
from service.config import DataPlaneConfig
from twin.fit.train import FitConfig

#: Tokens of the test servers, one per role.
TOKENS = {"reader-token": Role.READER, "rig-token": Role.RIG, "admin-token": Role.ADMIN}
READER, RIG, ADMIN = "reader-token", "rig-token", "admin-token"
#: Subjects with twins (fitted on sessions 1-2), and one with stored sessions but no twin.
TWIN_SUBJECTS = ("sim-000", "sim-001", "sim-002")
NO_TWIN = "sim-003"
#: Fast optimisation settings for twin updates in tests.
FAST_UPDATE = DataPlaneConfig(update_fit=FitConfig(epochs=2, patience=2), default_rollouts=50)
