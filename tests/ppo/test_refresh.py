"""``reward.refresh``: the learned reward refreshed on the policy's own episodes during PPO."""

import csv
import json

import pytest
import torch
from tensordict.nn import TensorDictModule

from torchrl_reward.hydra_configs import load_config
from torchrl_reward.inference.export import export_reward, load_manifest
from torchrl_reward.models import ResNetRewardModel
from torchrl_reward.ppo import make_ppo_config, train_ppo
from torchrl_reward.ppo.checkpoint import checkpoint_path
from torchrl_reward.ppo.refresh import DONE_FILE, REFRESH_DIR, RewardRefresh
from torchrl_reward.transforms import RewardTransform

LOGIT = 2.0


def _config(model_path, *overrides, reward="resnet"):
    learned = [f"reward.resnet.checkpoint_path={model_path}", "reward.device=cpu"]
    choice = [f"reward={reward}", *(learned if reward == "resnet" else [])]
    return make_ppo_config(load_config("ppo", [*choice, *overrides]))


@pytest.fixture
def model_path(tmp_path, constant_reward_model):
    return constant_reward_model(LOGIT).save(tmp_path / "reward.pt")


@pytest.mark.parametrize(
    ("reward", "overrides", "problem"),
    [
        ("dense", ["+reward.refresh.at_frames=[10]"], "use reward=resnet"),
        ("resnet", ["runner=ray", "reward.refresh.at_frames=[10]"], "needs runner=local"),
        ("resnet", ["reward.refresh.at_frames=[20,10]"], "increasing positive"),
        ("resnet", ["reward.refresh.at_frames=[0]"], "increasing positive"),
        ("resnet", ["reward.refresh.at_frames=[10]", "reward.refresh.target_failure=1"], ">= 2"),
    ],
)
def test_bad_schedules_say_what_is_wrong(tmp_path, model_path, reward, overrides, problem):
    with pytest.raises(ValueError, match=problem):
        RewardRefresh(_config(model_path, *overrides, reward=reward), tmp_path)


def test_a_resumed_run_scores_with_its_latest_finished_refresh(
    tmp_path, model_path, constant_reward_model
):
    """Refreshes done on disk are used, not redone; a later one is due only past its frames."""
    cfg = _config(model_path, "reward.refresh.at_frames=[100,200,300]")
    refresh = RewardRefresh(cfg, tmp_path)
    for frames, threshold in ((100, 0.6), (200, 0.7)):
        folder = tmp_path / REFRESH_DIR / f"at_{frames}"
        path = constant_reward_model(-LOGIT, threshold=threshold).save(folder / "model.pt")
        record = {"frames": frames, "checkpoint": str(path), "export_dir": None}
        (folder / DONE_FILE).write_text(json.dumps(record))
    transform = RewardTransform(model_path, device="cpu")

    refresh.restore(150, transform)
    assert transform.threshold == pytest.approx(0.6)
    refresh.restore(250, transform)
    assert transform.threshold == pytest.approx(0.7)
    assert transform.stats["reloads"] == 2
    assert refresh.checkpoint.endswith("at_200/model.pt")  # what the next refresh fine-tunes
    assert not refresh.due(299)
    assert refresh.due(300)


def test_a_refresh_without_both_outcomes_says_what_to_change(tmp_path, model_path):
    """Real env: a policy that never succeeds records no success in ``max_rounds``; the
    fine-tune cannot hold one out, so the refresh stops with what to change, not a deep error.
    (Short of its targets with >= 2 of each outcome, it fine-tunes on what it has.)"""
    cfg = _config(
        model_path,
        "env.image_size=64",
        "env.max_episode_steps=4",
        "reward.refresh.at_frames=[10]",
        "reward.refresh.num_envs=1",
        "reward.refresh.max_rounds=2",
    )
    still = TensorDictModule(
        lambda obs: torch.zeros(*obs.shape[:-1], 8), in_keys=["observation"], out_keys=["action"]
    )
    refresh = RewardRefresh(cfg, tmp_path)
    with pytest.raises(RuntimeError, match=r"success 0/30, failure 2/90 in 2 rounds.*max_rounds"):
        refresh.run_due(10, still, RewardTransform(model_path, device="cpu"))
    assert refresh.due(10)  # not marked done: a resumed run tries again


@pytest.mark.slow
def test_ppo_refreshes_the_reward_on_its_own_episodes(tmp_path, model_path):
    """Real env: at the scheduled frames the run records its policy's episodes, fine-tunes the
    reward model on them, exports it and scores the next batches through the new export
    (threshold and all)."""
    run_dir = tmp_path / "run"
    frames = torch.randint(0, 256, (8, 64, 64, 3), dtype=torch.uint8)
    export_reward(ResNetRewardModel.load(model_path), tmp_path / "export", frames, fp16=False)
    cfg = load_config(
        "ppo",
        [
            "init=kept_bc",  # succeeds often enough to record both outcomes in a few rounds
            "env.num_envs=2",
            "env.image_size=64",
            "ppo.num_steps=50",
            "ppo.num_epochs=1",
            "ppo.num_minibatches=2",
            "ppo.total_frames=200",
            "eval.interval=0",
            "runner.progress=false",
            "reward=resnet",
            f"reward.resnet.checkpoint_path={model_path}",
            "reward.device=cpu",
            "reward.backend=onnxruntime",
            f"reward.export_dir={tmp_path / 'export'}",
            "reward.refresh.at_frames=[100]",
            "reward.refresh.target_success=2",
            "reward.refresh.target_failure=2",
            "reward.refresh.num_envs=1",
            "reward.refresh.train.epochs=1",
            "reward.refresh.train.samples_per_epoch=64",
            "+reward.refresh.train.plots=false",
        ],
    )
    train_ppo(cfg, run_dir)

    record = json.loads((run_dir / REFRESH_DIR / "at_100" / DONE_FILE).read_text())
    assert record["episodes"] == {"success": 2, "failure": 2}
    refreshed = ResNetRewardModel.load(record["checkpoint"])
    assert refreshed.threshold == pytest.approx(record["threshold"])
    assert record["export_dir"] == str(run_dir / REFRESH_DIR / "at_100" / "export")
    assert load_manifest(record["export_dir"], refreshed)["backends"]["onnxruntime-fp32"]["passed"]
    scalars = run_dir / "logs" / "scalars"
    with open(scalars / "reward_model" / "threshold.csv") as f:
        thresholds = {int(step): float(value) for step, value in csv.reader(f)}
    # The constant model's 0.5 scored the first batch; the refreshed model's own the rest.
    assert thresholds[100] == pytest.approx(0.5)
    assert thresholds[200] == pytest.approx(record["threshold"])
    assert thresholds[200] != pytest.approx(0.5)
    assert (scalars / "reward_refresh" / "val_roc_auc.csv").read_text().startswith("100,")
    state = torch.load(checkpoint_path(run_dir), weights_only=False)
    assert state["collected_frames"] == 200
    assert state["reward_backend"].startswith("onnxruntime")  # the new export scored
