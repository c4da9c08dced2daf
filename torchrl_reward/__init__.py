"""torchrl-reward: learned visual success rewards for robot learning with TorchRL.

The public classes are imported on first use, so ``import torchrl_reward.ops`` (or the model)
does not pay for ManiSkill's import.
"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "ManiSkillEnv": "torchrl_reward.envs",
    "EpisodeRecorder": "torchrl_reward.data",
    "ResNetRewardModel": "torchrl_reward.models",
    "RewardTransform": "torchrl_reward.transforms",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'torchrl_reward' has no attribute {name!r}")
