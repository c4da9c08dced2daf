"""Actor and critic for state-based PPO (ManiSkill's baseline: 3x256 Tanh MLPs)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tensordict.nn import AddStateIndependentNormalScale, TensorDictModule
from torch import nn
from torchrl.data import TensorSpec
from torchrl.envs import ExplorationType
from torchrl.modules import MLP, ProbabilisticActor, TanhNormal, ValueOperator

# The actor's mean before tanh is bounded to +-LOC_BOUND (``LOC_BOUND * tanh(m / LOC_BOUND)``).
# Unbounded, behaviour cloning drives the gripper's mean to 7-8 (the script's +-1 commands), where
# float32 tanh leaves too few bits for atanh to recover the sample: PPO's first ratio on the kept
# clone's own actions was off by up to 2.1 nats, a spurious step on every update.
LOC_BOUND = 5.0


def bounded_mean(raw_mean: torch.Tensor) -> torch.Tensor:
    """The actor's deterministic action for the policy network's raw mean output."""
    return torch.tanh(LOC_BOUND * torch.tanh(raw_mean / LOC_BOUND))


def _mlp(in_features: int, out_features: int, hidden: Sequence[int], last_gain: float) -> MLP:
    mlp = MLP(
        in_features=in_features,
        out_features=out_features,
        num_cells=list(hidden),
        activation_class=nn.Tanh,
    )
    linears = [m for m in mlp.modules() if isinstance(m, nn.Linear)]
    for layer in linears:
        nn.init.orthogonal_(layer.weight, gain=2**0.5)
        nn.init.zeros_(layer.bias)
    nn.init.orthogonal_(linears[-1].weight, gain=last_gain)
    return mlp


def make_ppo_models(
    obs_dim: int,
    action_spec: TensorSpec,
    hidden_sizes: Sequence[int] = (256, 256, 256),
    device: torch.device | str = "cpu",
) -> tuple[ProbabilisticActor, ValueOperator]:
    """Build the Tanh-Normal actor (state-independent scale) and the value network.

    ``action_spec`` is the unbatched action spec; actions are squashed into its bounds.
    """
    n_act = action_spec.shape[-1]
    policy_net = nn.Sequential(
        _mlp(obs_dim, n_act, hidden_sizes, last_gain=0.01 * 2**0.5),
        AddStateIndependentNormalScale(n_act, scale_lb=1e-4),
    )
    actor = ProbabilisticActor(
        TensorDictModule(policy_net, in_keys=["observation"], out_keys=["loc", "scale"]),
        in_keys=["loc", "scale"],
        spec=action_spec,
        distribution_class=TanhNormal,
        distribution_kwargs={
            "low": action_spec.space.low,
            "high": action_spec.space.high,
            "tanh_loc": True,
            "upscale": LOC_BOUND,
        },
        return_log_prob=True,
        default_interaction_type=ExplorationType.RANDOM,
    ).to(device)
    critic = ValueOperator(_mlp(obs_dim, 1, hidden_sizes, last_gain=1.0), in_keys=["observation"])
    return actor, critic.to(device)
