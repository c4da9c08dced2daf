"""Episode statistics of a collected batch, carried across batch boundaries."""

from __future__ import annotations

import torch
from tensordict import TensorDictBase


class EpisodeStats:
    """Tracks ``success_once`` / ``success_at_end`` / return of episodes finishing in batches.

    Collector batches are ``[num_envs, T]`` and episodes straddle them, so per-env running
    values are kept between calls.
    """

    def __init__(self, num_envs: int) -> None:
        self._success_once = torch.zeros(num_envs, dtype=torch.bool)
        self._return = torch.zeros(num_envs)

    def update(self, batch: TensorDictBase) -> dict[str, float]:
        """Fold a ``[num_envs, T]`` batch in; return means over the episodes it finished."""
        success = batch["next", "success"].reshape(*batch.batch_size).cpu()
        done = batch["next", "done"].reshape(*batch.batch_size).cpu()
        # Not RewardSum: it sums the env's reward as collected; a learned reward replaces it later.
        reward = batch["next", "reward"].reshape(*batch.batch_size).cpu().float()
        once, at_end, returns = [], [], []
        for t in range(success.shape[1]):
            self._success_once |= success[:, t]
            self._return += reward[:, t]
            ended = done[:, t]
            if ended.any():
                once.append(self._success_once[ended].clone())
                at_end.append(success[ended, t])
                returns.append(self._return[ended].clone())
                self._success_once[ended] = False
                self._return[ended] = 0.0
        if not once:
            return {}
        return {
            "env/success_once": torch.cat(once).float().mean().item(),
            "env/success_at_end": torch.cat(at_end).float().mean().item(),
            "env/episode_return": torch.cat(returns).mean().item(),
            "env/episodes": float(sum(len(x) for x in once)),
        }
