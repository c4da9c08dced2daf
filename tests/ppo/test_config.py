"""The typed PPO configuration and its YAML mirror, ``configs/ppo.yaml`` and its groups."""

import itertools
from dataclasses import asdict

import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from torchrl_reward.hydra_configs import config_dir, load_config
from torchrl_reward.ppo import PPORunConfig, make_ppo_config
from torchrl_reward.ppo.config import RewardConfig, RunnerConfig

GROUPS = {
    "env": ("cpu", "gpu"),
    "reward": ("dense", "resnet"),
    "runner": ("local", "ray"),
    "init": tuple(sorted(p.stem for p in (config_dir() / "init").glob("*.yaml"))),
}
CHOICES = [dict(zip(GROUPS, combo, strict=True)) for combo in itertools.product(*GROUPS.values())]


def _overrides(choice: dict[str, str]) -> list[str]:
    return [f"{group}={option}" for group, option in choice.items()]


def _composed(choice: dict[str, str]) -> dict:
    return OmegaConf.to_container(load_config("ppo", _overrides(choice)), resolve=True)


def test_defaults_are_the_default_composition():
    assert make_ppo_config(load_config("ppo")) == PPORunConfig()
    full = make_ppo_config(load_config("ppo", ["reward=resnet", "runner=ray"]))
    assert full.reward == RewardConfig(use_reward_model=True)
    assert full.runner == RunnerConfig(name="ray")


@pytest.mark.parametrize("choice", CHOICES, ids=lambda c: "-".join(c.values()))
def test_typed_config_mirrors_every_composition(choice):
    """Every composed key and value, and nothing else; ``reward=dense`` and ``runner=local``
    leave out only the fields of ``reward=resnet`` and ``runner=ray``, which keep theirs."""
    typed = asdict(make_ppo_config(load_config("ppo", _overrides(choice))))
    expected = _composed(choice)
    full = _composed({**choice, "reward": "resnet", "runner": "ray"})
    expected["reward"] = {**full["reward"], **expected["reward"]}
    expected["runner"] = {**full["runner"], **expected["runner"]}
    assert typed == expected


def test_unknown_keys_and_bad_types_are_named():
    with pytest.raises(ConfigKeyError, match=r"env\.not_a_key"):
        make_ppo_config({"env": {"not_a_key": 1}})
    with pytest.raises(ConfigKeyError, match=r"ppo\.bogus"):
        make_ppo_config(load_config("ppo", ["+ppo.bogus=1"]))
    with pytest.raises(ValidationError, match="seed"):
        make_ppo_config({"seed": "one"})


def test_round_trip_through_asdict():
    cfg = make_ppo_config(load_config("ppo", ["init=weak_bc", "reward=resnet", "runner=ray"]))
    assert make_ppo_config(asdict(cfg)) == cfg
    copy = make_ppo_config(cfg)
    assert copy == cfg and copy is not cfg
