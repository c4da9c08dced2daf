"""Where a reward model's reward goes on a policy's recorded episodes, by the simulator's truth.

    python scripts/reward_breakdown.py checkpoint_path=checkpoints/reward_pickcube_factored.pt \\
        episodes_dir=<episodes> output=soft

Configuration: ``configs/reward_breakdown.yaml``. Record the episodes from the policy in
question (``scripts/ppo.py runner.init_from=<policy> collect.enabled=true ...``); the frames
keep the views the checkpoint was trained on. A reward that pays frames near the goal as well
as success ones is what a policy learns to hover in (reward hacking).
"""

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig

from torchrl_reward.inference.export import training_views
from torchrl_reward.models import ResNetRewardModel
from torchrl_reward.training import build_frame_cache
from torchrl_reward.training.breakdown import reward_breakdown
from torchrl_reward.utils import atomic_write


@hydra.main(config_path="../configs", config_name="reward_breakdown", version_base="1.3")
def main(cfg: DictConfig) -> None:
    checkpoint = Path(cfg.checkpoint_path)
    model = ResNetRewardModel.load(checkpoint)
    cache = build_frame_cache(cfg.episodes_dir)
    breakdown = reward_breakdown(
        model,
        cache,
        output=cfg.output,
        threshold=cfg.threshold,
        views=training_views(model),
        chunk_size=cfg.chunk_size,
    )
    table = breakdown.markdown()
    out = Path(
        cfg.out or Path(cfg.episodes_dir) / f"reward_breakdown_{checkpoint.stem}_{cfg.output}.json"
    )
    with atomic_write(out, "w") as f:
        json.dump(
            {**breakdown.to_dict(), "checkpoint": str(checkpoint), "table": table}, f, indent=2
        )
    print(f"{checkpoint} on {len(cache.files)} episodes of {cfg.episodes_dir}:\n\n{table}\n\n{out}")


if __name__ == "__main__":
    main()
