"""PPO checkpoints on one seeded set of deterministic PickCube episodes, failures by where they end.

python scripts/evaluate_policy.py 'policies={dense_s2: <run dir>, learned_s2: <run dir>}'
"""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from torchrl_reward.ppo.failures import checkpoint_failure_modes, markdown_table
from torchrl_reward.utils import atomic_write


@hydra.main(config_path="../configs", config_name="evaluate_policy", version_base="1.3")
def main(cfg: DictConfig) -> None:
    if not cfg.policies:
        raise ValueError("Name the policies: policies={dense: <run dir or checkpoint>, ...}.")
    rows = {
        name: checkpoint_failure_modes(path, cfg.num_episodes, cfg.seed, cfg.max_episode_steps)
        for name, path in cfg.policies.items()
    }
    table = markdown_table(rows)
    print(table)
    if cfg.table:
        with atomic_write(Path(cfg.table), "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
