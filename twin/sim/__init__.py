"""Simulation: the task environment, ground-truth agents, rollouts of a learner through a protocol."""
