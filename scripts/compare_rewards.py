"""Reward arms side by side: a markdown table and a success-vs-frames PNG from PPO run folders.

python scripts/compare_rewards.py 'arms={dense: [runs/dense_s1, runs/dense_s2], ...}'
"""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from torchrl_reward.ppo.compare import markdown_table, plot_arms, summarise_run
from torchrl_reward.utils import atomic_write


@hydra.main(config_path="../configs", config_name="compare_rewards", version_base="1.3")
def main(cfg: DictConfig) -> None:
    if not cfg.arms:
        raise ValueError("Name the runs: arms={dense: [<run dir>, ...], learned: [...]}.")
    runs = [summarise_run(arm, d) for arm, dirs in cfg.arms.items() for d in dirs]
    table = markdown_table(runs)
    print(table)
    if cfg.table:
        with atomic_write(Path(cfg.table), "w") as f:
            f.write(table + "\n")
    print(f"plot: {plot_arms(runs, cfg.plot, title=cfg.title)}")


if __name__ == "__main__":
    main()
