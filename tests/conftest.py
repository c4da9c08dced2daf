"""Shared test settings: small, deterministic, CPU."""

import torch

torch.set_num_threads(2)
