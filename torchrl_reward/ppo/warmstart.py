"""Behaviour-cloning warm start: PPO begins from a policy that already succeeds.

Dense-reward PPO on 4 CPU envs finds no success in 1M steps (BENCHMARKS.md). With
``warmstart.enabled=true`` the actor is first fitted to the successful episodes of the scripted
``pd_ee_delta_pos`` controller (and the critic to their discounted returns); PPO then improves
that policy on the configured reward. The demonstrations are state-only, so this costs about a
minute on a 2-core CPU.
"""

from __future__ import annotations

import logging
import math

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.envs import EnvBase
from torchrl.modules import ProbabilisticActor, ValueOperator
from torchrl.objectives.value.functional import reward2go

from torchrl_reward.envs.scripted import CONTROL_MODE, ScriptedPickPolicy
from torchrl_reward.ppo.config import WarmstartConfig
from torchrl_reward.ppo.models import bounded_mean

log = logging.getLogger(__name__)


def record_demonstrations(
    env: EnvBase, num_episodes: int, noise: float, max_steps: int, generator: torch.Generator
) -> tuple[TensorDictBase, float]:
    """Play the scripted controller; return its successful steps and its success rate.

    The steps are flat ``[T]``: ``observation``, ``action`` (clipped to [-1, 1]), ``reward``
    and ``episode`` (an index shared by the steps of one episode).
    """
    policy = ScriptedPickPolicy(noise=noise, generator=generator)
    kept, successes = [], 0
    for _ in range(num_episodes):
        episode = env.rollout(max_steps, policy, break_when_any_done=True).reshape(-1)
        if not episode["next", "success"].any():
            continue
        successes += 1
        kept.append(
            TensorDict(
                {
                    "observation": episode["observation"],
                    "action": episode["action"].clamp(-1, 1),
                    "reward": episode["next", "reward"].reshape(-1),
                    "episode": torch.full((episode.numel(),), successes),
                },
                batch_size=[episode.numel()],
            )
        )
    if not kept:
        raise RuntimeError(
            f"the scripted controller succeeded in none of {num_episodes} episodes "
            f"(noise={noise}); lower warmstart.noise or raise warmstart.episodes."
        )
    return torch.cat(kept), successes / num_episodes


def discounted_returns(reward: torch.Tensor, episode: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-step discounted return to the end of its episode (an episode's steps are contiguous).

    TorchRL's ``reward2go`` with an episode end wherever the episode index changes.
    """
    done = torch.ones_like(episode, dtype=torch.bool)
    done[:-1] = episode[1:] != episode[:-1]
    return reward2go(reward.unsqueeze(-1), done.unsqueeze(-1), gamma, time_dim=-2).squeeze(-1)


def behaviour_clone(
    actor: ProbabilisticActor,
    critic: ValueOperator,
    demos: TensorDictBase,
    cfg: WarmstartConfig,
    gamma: float,
) -> dict[str, float]:
    """Fit the actor's deterministic action (:func:`bounded_mean`) and the critic to ``demos``.

    The actor's state-independent scale is then set to ``cfg.init_scale``: small enough that
    the stochastic policy still succeeds, large enough for PPO to explore.
    """
    policy_net = actor.module[0].module  # Sequential(MLP, AddStateIndependentNormalScale)
    mean_net, scale = policy_net[0], policy_net[1]
    value_net = critic.module
    obs, action = demos["observation"], demos["action"]
    target_value = discounted_returns(demos["reward"], demos["episode"], gamma).unsqueeze(-1)
    params = [*mean_net.parameters(), *value_net.parameters()]
    optim = torch.optim.Adam(params, lr=cfg.lr)
    n = obs.shape[0]
    action_loss = value_loss = float("nan")
    for _ in range(cfg.epochs):
        action_sum = value_sum = 0.0
        for idx in torch.randperm(n).split(cfg.batch_size):
            a_loss = (bounded_mean(mean_net(obs[idx])) - action[idx]).pow(2).mean()
            v_loss = (value_net(obs[idx]) - target_value[idx]).pow(2).mean()
            optim.zero_grad(set_to_none=True)
            (a_loss + v_loss).backward()
            optim.step()
            action_sum += a_loss.item() * idx.numel()
            value_sum += v_loss.item() * idx.numel()
        action_loss, value_loss = action_sum / n, value_sum / n
    with torch.no_grad():
        scale.state_independent_scale.fill_(math.log(cfg.init_scale))
    return {"warmstart/action_mse": action_loss, "warmstart/value_mse": value_loss}


def warm_start(
    actor: ProbabilisticActor,
    critic: ValueOperator,
    env: EnvBase,
    cfg: WarmstartConfig,
    *,
    control_mode: str,
    max_steps: int,
    gamma: float,
    seed: int,
) -> dict[str, float]:
    """Record scripted demonstrations on ``env`` (one state-only env) and clone them."""
    if control_mode != CONTROL_MODE:
        raise ValueError(
            f"warmstart clones the scripted {CONTROL_MODE} controller, but "
            f"env.control_mode={control_mode!r}; add env.control_mode={CONTROL_MODE}."
        )
    generator = torch.Generator().manual_seed(seed)
    demos, success_rate = record_demonstrations(env, cfg.episodes, cfg.noise, max_steps, generator)
    demos = demos.to(next(actor.parameters()).device)
    metrics = behaviour_clone(actor, critic, demos, cfg, gamma)
    metrics.update({"warmstart/demo_success": success_rate, "warmstart/steps": demos.numel()})
    log.info("Warm start: %s", metrics)
    return metrics
