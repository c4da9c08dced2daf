"""Scale-out on Ray through what TorchRL ships: the cluster session and the reward model actor.

``runner=ray`` (``configs/runner/ray.yaml``) uses these; :mod:`torchrl_reward.ppo.ray_runner`
builds the remote collectors.
"""

from torchrl_reward.distributed.cluster import ray_session
from torchrl_reward.distributed.reward_actor import (
    RemoteRewardTransform,
    RewardModelActor,
    start_reward_actor,
)

__all__ = ["RemoteRewardTransform", "RewardModelActor", "ray_session", "start_reward_actor"]
