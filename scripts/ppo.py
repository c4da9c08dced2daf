"""PPO on ManiSkill PickCube-v1 from state; optionally records episodes or uses a learned reward.

python scripts/ppo.py                                   # dense reward, CPU preset
python scripts/ppo.py env=gpu                           # 1024 envs on one GPU
python scripts/ppo.py init=scripted_bc                  # start from a clone of the script
python scripts/ppo.py init=kept_bc                      # from the kept policy (95% success)
python scripts/ppo.py init=weak_bc                      # from a weak clone (36% success)
python scripts/ppo.py collect.enabled=true collect.save_dir=data/pickcube
python scripts/ppo.py reward=resnet reward.resnet.checkpoint_path=... runner.resume_dir=...
python scripts/ppo.py runner=ray runner.num_collectors=2   # collectors as Ray actors
"""

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from torchrl_reward.ppo import make_ppo_config, train_ppo


@hydra.main(config_path="../configs", config_name="ppo", version_base="1.3")
def main(cfg: DictConfig) -> None:
    train_ppo(make_ppo_config(cfg), HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    main()
