"""Fingerprints that tie exported files to their checkpoint."""

import copy

import torch

from torchrl_reward.inference import model_fingerprint


def test_fingerprint_follows_the_weights(model):
    twin = copy.deepcopy(model)
    assert model_fingerprint(twin) == model_fingerprint(model)
    with torch.no_grad():
        twin.head[-1].bias += 1.0
    assert model_fingerprint(twin) != model_fingerprint(model)
