"""Shared test setup: one torch thread (the per-trial ops are tiny; more threads only contend)."""

import torch

torch.set_num_threads(1)
