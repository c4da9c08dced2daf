"""Train the ResNet success classifier on recorded episodes.

    python scripts/train_reward.py data_path=data/pickcube save_dir=outputs/reward_model

Configuration: ``configs/train_reward.yaml``. A re-run with the same ``save_dir`` resumes.
"""

import hydra
from omegaconf import DictConfig

from torchrl_reward.training import train_reward_model


@hydra.main(config_path="../configs", config_name="train_reward", version_base=None)
def main(cfg: DictConfig) -> None:
    result = train_reward_model(cfg)
    m = result.metrics
    print(
        f"best model: {result.best_path} (threshold {result.threshold:.4f}); validation at the "
        f"threshold: FPR {m['fpr']:.4f}, recall {m['recall']:.4f}, ROC-AUC {m['roc_auc']:.4f}, "
        f"episode balanced accuracy {m['episode_balanced_accuracy']:.4f}"
    )


if __name__ == "__main__":
    main()
