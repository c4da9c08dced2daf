"""Export a reward checkpoint to ONNX (fp32, int8, fp16) with parity checks on recorded frames.

    python scripts/export_reward.py checkpoint_path=outputs/reward_model/reward_model_best.pt \\
        episodes_dir=data/pickcube

Configuration: ``configs/export_reward.yaml``. The folder it writes is the ``export_dir`` of
``RewardTransform(..., backend="auto")``, which uses only the backends that passed. The frames
keep the views the checkpoint was trained on (``train.views``).
"""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from torchrl_reward.inference.export import export_from_episodes, export_options
from torchrl_reward.models import ResNetRewardModel


@hydra.main(config_path="../configs", config_name="export_reward", version_base="1.3")
def main(cfg: DictConfig) -> None:
    checkpoint = Path(cfg.checkpoint_path)
    model = ResNetRewardModel.load(checkpoint)
    out_dir = Path(cfg.out_dir or checkpoint.with_name(f"{checkpoint.stem}_export"))
    manifest = export_from_episodes(model, out_dir, cfg.episodes_dir, **export_options(cfg))
    print(f"exported {checkpoint} to {out_dir} ({manifest['validation_frames']} parity frames)")
    for name, entry in manifest["backends"].items():
        if "agreement" in entry:
            verdict = "passed" if entry["passed"] else "REJECTED"
            print(
                f"  {name:18s} label agreement {entry['agreement']:.4f} "
                f"(max |dp| {entry['max_abs_diff']:.2e}) {verdict}"
            )
        if entry.get("ms_per_chunk") is not None:
            print(f"  {name:18s} {entry['ms_per_chunk']:.0f} ms per {cfg.chunk_size}-frame chunk")


if __name__ == "__main__":
    main()
