"""Re-save a reward model with its threshold set for a target FPR on a policy's recording.

    python scripts/calibrate_threshold.py checkpoint_path=checkpoints/reward_pickcube_factored.pt \\
        episodes_dir=<episodes> target_fpr=0.0025 out=<calibrated.pt>

Configuration: ``configs/calibrate_threshold.yaml``. Record the episodes from the policy the
reward will train (``scripts/ppo.py runner.init_from=<policy> collect.enabled=true ...``), then
export the re-saved checkpoint (``scripts/export_reward.py``): an export checks its parity at
the checkpoint's own threshold.
"""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from torchrl_reward.inference.export import training_views
from torchrl_reward.models import ResNetRewardModel
from torchrl_reward.training import build_frame_cache, calibrate_threshold


@hydra.main(config_path="../configs", config_name="calibrate_threshold", version_base="1.3")
def main(cfg: DictConfig) -> None:
    model = ResNetRewardModel.load(cfg.checkpoint_path)
    cache = build_frame_cache(cfg.episodes_dir)
    before = model.threshold
    threshold, metrics = calibrate_threshold(
        model, cache, cfg.target_fpr, views=training_views(model), chunk_size=cfg.chunk_size
    )
    model.threshold = threshold
    calibration = {"episodes_dir": str(cfg.episodes_dir), "target_fpr": cfg.target_fpr, **metrics}
    out = model.save(Path(cfg.out), calibration=calibration)
    print(
        f"threshold {before:.4f} -> {threshold:.4f} for frame FPR <= {cfg.target_fpr} on "
        f"{len(cache)} frames of {len(cache.files)} episodes: recall {metrics['recall']:.3f}, "
        f"FPR {metrics['fpr']:.4f}, precision {metrics['precision']:.3f}, episode balanced "
        f"accuracy {metrics['episode_balanced_accuracy']:.3f}; saved {out}"
    )


if __name__ == "__main__":
    main()
