"""The main job: collect -> train the reward model -> export it -> PPO with the learned reward
-> report.

python scripts/pipeline.py                 # CPU preset (2 cores, no GPU)
python scripts/pipeline.py preset=gpu      # the seed's scale
"""

import sys

import hydra
from omegaconf import DictConfig

from torchrl_reward.pipeline import StageError, run_pipeline


@hydra.main(config_path="../configs", config_name="pipeline", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        run_pipeline(cfg)
    except StageError as err:
        print(f"pipeline: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
