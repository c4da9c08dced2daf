"""Calibrating a reward model's threshold on a real recording, in Python and from the command
line (a real model and checkpoint; untrained weights are enough to rank frames)."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from torchrl_reward.models import ResNetRewardModel
from torchrl_reward.training import (
    binary_metrics,
    build_frame_cache,
    calibrate_threshold,
    predict_frames,
)

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # the reward_dataset fixture records episodes with the simulator


def _model() -> ResNetRewardModel:
    torch.manual_seed(0)
    return ResNetRewardModel(image_size=32, proprio={"qvel": 9}, head="factored").eval()


def test_threshold_keeps_the_fpr_and_reports_what_it_scores(reward_dataset):
    cache = build_frame_cache(reward_dataset)
    model = _model()
    probs = predict_frames(
        model, cache, torch.arange(len(cache)), 64, torch.device("cpu"), proprio=cache.extra("qvel")
    )
    for target in (0.0, 0.05, 0.3):
        threshold, metrics = calibrate_threshold(model, cache, target)
        assert metrics["fpr"] <= target and metrics["threshold"] == threshold
        assert metrics["recall"] == binary_metrics(probs, cache.labels, threshold)["recall"]
        assert 0.0 <= metrics["episode_balanced_accuracy"] <= 1.0
    with pytest.raises(ValueError, match=r"target_fpr must be in \[0, 1\)"):
        calibrate_threshold(model, cache, 1.0)


def test_script_resaves_the_checkpoint_with_the_threshold(reward_dataset, tmp_path):
    source = _model().save(tmp_path / "model.pt")
    out = tmp_path / "calibrated.pt"
    args = [f"checkpoint_path={source}", f"episodes_dir={reward_dataset}", "target_fpr=0.05"]
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "calibrate_threshold.py"), *args, f"out={out}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    calibrated = ResNetRewardModel.load(out)
    expected, _ = calibrate_threshold(_model(), build_frame_cache(reward_dataset), 0.05)
    assert calibrated.threshold == pytest.approx(expected)
    assert calibrated.checkpoint_metadata["calibration"]["target_fpr"] == 0.05
    assert f"-> {expected:.4f}" in done.stdout
    source_weights = ResNetRewardModel.load(source).state_dict()
    assert all(torch.equal(v, source_weights[k]) for k, v in calibrated.state_dict().items())
