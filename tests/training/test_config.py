"""The typed training configuration and its YAML mirror."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from torchrl_reward.training import TrainConfig, make_config

REPO = Path(__file__).resolve().parents[2]


def test_config_is_typed_and_checked():
    with pytest.raises(ValueError, match="multiple of micro_batch_size"):
        make_config(micro_batch_size=48, global_batch_size=64)
    with pytest.raises(ValueError, match="static_lr must be > 0"):
        make_config(static_lr=0.0)
    with pytest.raises(ValueError, match="static_batch_size must be >= 0, got -1"):
        make_config(static_batch_size=-1)
    with pytest.raises(Exception, match="not_a_key"):
        make_config({"not_a_key": 1})
    yaml = OmegaConf.load(REPO / "configs" / "train_reward.yaml")
    assert make_config(yaml) == OmegaConf.structured(TrainConfig)
