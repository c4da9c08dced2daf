"""End-to-end training on a small real dataset: learning, checkpoints, threshold, resume, errors."""

import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torchrl.envs import TransformedEnv

from torchrl_reward.data import EpisodeRecorder, list_episode_files, load_episode, write_episode
from torchrl_reward.models import ResNetRewardModel
from torchrl_reward.training import (
    binary_metrics,
    build_frame_cache,
    frames_of,
    predict_frames,
    split_episodes,
    train_reward_model,
)
from torchrl_reward.viz import read_scalar

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # records episodes with the simulator


def _config(data_path, save_dir, **overrides) -> dict:
    """The tiny, fast configuration: 64 px frames scored at 32 px, 2 x 2 x 16 frames per epoch."""
    return {
        "data_path": str(data_path),
        "save_dir": str(save_dir),
        "model": {"image_size": 32},
        "epochs": 2,
        "micro_batch_size": 16,
        "global_batch_size": 32,
        "samples_per_epoch": 64,
        "lr": 1e-3,
        "eval_batch_size": 64,
        "num_workers": 0,
        "progress": False,
        "device": "cpu",
        **overrides,
    }


def _comparable(history):
    """Rows without timings, NaN (an undefined ratio, e.g. precision with no success calls)
    spelled out so that equal rows compare equal."""
    return [
        {k: "nan" if math.isnan(v) else v for k, v in row.items() if not k.startswith("time/")}
        for row in history
    ]


@pytest.fixture(scope="module")
def trained(reward_dataset, tmp_path_factory):
    save_dir = tmp_path_factory.mktemp("trained")
    return train_reward_model(_config(reward_dataset, save_dir)), save_dir


def test_loss_goes_down_and_every_parameter_learns(reward_dataset):
    torch.manual_seed(0)
    cache = build_frame_cache(reward_dataset)
    pos = cache.labels.nonzero().squeeze(-1)[:4]
    neg = (~cache.labels).nonzero().squeeze(-1)[:: len(cache) // 4][:4]
    idx = torch.cat([pos, neg]).sort().values
    pixels, labels = cache.pixels[idx], cache.labels[idx].float()
    model = ResNetRewardModel(image_size=32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for step in range(5):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(pixels), labels)
        optimizer.zero_grad()
        loss.backward()
        if step == 0:
            for name, param in model.named_parameters():
                assert param.grad is not None and param.grad.abs().sum() > 0, name
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_training_writes_checkpoints_metrics_and_reports(trained):
    result, save_dir = trained
    for name in ("reward_model_best.pt", "reward_model_last.pt"):
        assert (save_dir / name).is_file(), name
    for name in ("curves.png", "roc.png", "worst.png"):
        assert (save_dir / name).read_bytes()[:4] == b"\x89PNG", name
    # The per-epoch metrics are the logger's, one point per epoch.
    steps, values = read_scalar(save_dir / "logs" / "reward_model", "val/roc_auc")
    assert steps == [1.0, 2.0] and values == [row["val/roc_auc"] for row in result.history]
    assert len(result.history) == 2 and not result.stopped_early
    assert result.data["skipped_files"] == 0
    assert result.data["train_episodes"] + result.data["val_episodes"] == result.data["episodes"]
    model = ResNetRewardModel.load(result.best_path)
    assert model.threshold == result.threshold
    meta = model.checkpoint_metadata
    assert meta["training_config"]["lr"] == 1e-3 and meta["target_fpr"] == 0.01
    assert meta["val_metrics_at_threshold"]["threshold"] == result.threshold
    for key in ("roc_auc", "recall", "fpr", "episode_balanced_accuracy"):
        assert 0.0 <= result.metrics[key] <= 1.0, key
    # What each checkpoint holds beside the weights: the best one its validation metrics and
    # threshold, the last one what a resume reads.
    best_meta = {"training_config", "epoch", "val_metrics", "data", "validation_episodes"}
    assert set(meta) == best_meta | {"target_fpr", "val_metrics_at_threshold"}
    last = torch.load(result.last_path, weights_only=True)
    assert set(last["metadata"]) == {"training_config", "epoch", "validation_episodes"}
    assert set(last["training_state"]) == {
        "epoch",
        "optimizer",
        "scaler",
        "history",
        "best",
        "bad_epochs",
        "stopped_early",
        "fingerprint",
        "logger",
    }
    assert _comparable(last["training_state"]["history"]) == _comparable(result.history)


def test_split_has_no_shared_episodes_and_threshold_meets_fpr(trained, reward_dataset):
    result, _ = trained
    cache = build_frame_cache(reward_dataset)
    train_eps, val_eps = split_episodes(cache.episode_success, 0.2, seed=0)
    train_frames, val_frames = frames_of(cache, train_eps), frames_of(cache, val_eps)
    assert set(cache.episodes[train_frames].tolist()).isdisjoint(
        cache.episodes[val_frames].tolist()
    )
    assert train_frames.numel() + val_frames.numel() == len(cache)
    assert val_frames.numel() == result.data["val_frames"]
    # Both checkpoints name the validation episodes, for the export's parity frames.
    recorded = [cache.files[i] for i in val_eps.tolist()]
    for path in (result.best_path, result.last_path):
        checkpoint = torch.load(path, weights_only=True)
        assert checkpoint["metadata"]["validation_episodes"] == recorded
    # The stored threshold, applied by the reloaded model, meets the target on validation.
    model = ResNetRewardModel.load(result.best_path)
    probs = predict_frames(model, cache, val_frames, 64, torch.device("cpu"))
    val = binary_metrics(probs, cache.labels[val_frames], model.threshold)
    assert val["fpr"] <= 0.01
    assert val["recall"] == result.metrics["recall"]


def test_resume_continues_from_the_last_checkpoint(trained, reward_dataset, tmp_path):
    reference, _ = trained
    first = train_reward_model(_config(reward_dataset, tmp_path, epochs=1, plots=False))
    assert len(first.history) == 1
    resumed = train_reward_model(_config(reward_dataset, tmp_path, epochs=2, plots=False))
    assert _comparable(resumed.history) == _comparable(reference.history)
    assert resumed.threshold == reference.threshold
    checkpoint = torch.load(resumed.last_path, weights_only=True)
    assert checkpoint["training_state"]["epoch"] == 1


def test_early_stopping_ends_the_run_and_stays_ended(reward_dataset, tmp_path):
    # min_delta=1 makes any later epoch a non-improvement: stop after patience=1 epoch.
    config = _config(reward_dataset, tmp_path, epochs=4, patience=1, min_delta=1.0, plots=False)
    result = train_reward_model(config)
    assert result.stopped_early and len(result.history) == 2
    again = train_reward_model(config)
    assert again.stopped_early and len(again.history) == 2
    assert again.threshold == result.threshold


def test_fine_tuning_starts_from_init_from_and_keeps_it_unless_beaten(
    trained, reward_dataset, tmp_path
):
    reference, _ = trained
    start = ResNetRewardModel.load(reference.best_path)
    # min_delta=1: no epoch beats the starting model, which stays the best (epoch 0).
    config = _config(
        reward_dataset, tmp_path, init_from=str(reference.best_path), min_delta=1.0, plots=False
    )
    result = train_reward_model(config)
    best = ResNetRewardModel.load(result.best_path)
    assert best.checkpoint_metadata["epoch"] == 0 and len(result.history) == 2
    for name, value in start.state_dict().items():
        torch.testing.assert_close(best.state_dict()[name], value, atol=0, rtol=0)
    last = ResNetRewardModel.load(result.last_path).state_dict()
    assert any(not torch.equal(last[n], v) for n, v in start.state_dict().items())
    with pytest.raises(ValueError, match=r"does not fit this run's model.*image_size"):
        bigger = _config(reward_dataset, tmp_path / "b", init_from=str(reference.best_path))
        train_reward_model({**bigger, "model": {"image_size": 64}})


def test_resume_with_another_image_size_raises(trained, reward_dataset, tmp_path):
    _, save_dir = trained
    shutil.copy(save_dir / "reward_model_last.pt", tmp_path / "reward_model_last.pt")
    config = _config(reward_dataset, tmp_path, model={"image_size": None})  # the frames' 64
    with pytest.raises(ValueError, match="image_size=32"):
        train_reward_model(config)


def test_resume_with_other_labels_raises(trained, reward_dataset, tmp_path):
    _, save_dir = trained
    shutil.copy(save_dir / "reward_model_last.pt", tmp_path / "reward_model_last.pt")
    config = _config(reward_dataset, tmp_path, frame_label="success_once")
    with pytest.raises(ValueError, match="another validation split or labels"):
        train_reward_model(config)


def test_bad_data_and_device_raise(reward_dataset, tmp_path):
    failures_only = tmp_path / "failures_only"
    shutil.copytree(reward_dataset / "failure", failures_only / "failure")
    with pytest.raises(ValueError, match="only failure frames"):
        train_reward_model(_config(failures_only, tmp_path / "a"))
    empty = tmp_path / "empty"
    (empty / "success").mkdir(parents=True)
    with pytest.raises(ValueError, match="No episode files"):
        train_reward_model(_config(empty, tmp_path / "b"))
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA GPU"):
            train_reward_model(_config(reward_dataset, tmp_path / "c", device="cuda"))


def test_script_trains_from_the_command_line(reward_dataset, tmp_path):
    overrides = _config(
        reward_dataset, tmp_path / "run", epochs=1, plots=False, samples_per_epoch=32
    )
    overrides["model.image_size"] = overrides.pop("model")["image_size"]
    args = [f"{k}={v}" for k, v in overrides.items()] + [f"hydra.run.dir={tmp_path / 'hydra'}"]
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "train_reward.py"), *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "best model:" in done.stdout
    assert ResNetRewardModel.load(tmp_path / "run" / "reward_model_best.pt").image_size == 32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_mixed_precision_training_on_gpu(reward_dataset, tmp_path):
    result = train_reward_model(_config(reward_dataset, tmp_path, device="cuda"))
    assert len(result.history) == 2
    assert all(torch.isfinite(torch.tensor(row["train/loss"])) for row in result.history)
    model = ResNetRewardModel.load(result.best_path)
    assert next(model.parameters()).dtype == torch.float32
    assert model.threshold == result.threshold


def _shuffled_copy(root: Path, out: Path, key: str) -> Path:
    """The dataset with ``key``'s per-frame flags permuted across all frames (same files)."""
    files = list_episode_files(root)
    episodes = [load_episode(path) for path in files]
    flags = torch.cat([e[key] for e in episodes])
    flags = flags[torch.randperm(flags.numel(), generator=torch.Generator().manual_seed(0))]
    for path, episode in zip(files, episodes, strict=True):
        n = episode.batch_size[0]
        episode.set(key, flags[:n].clone())
        flags = flags[n:]
        write_episode(out / path.relative_to(root), episode)
    return out


@pytest.fixture(scope="module")
def pick_or_idle(tmp_path_factory) -> Path:
    """8 recorded episodes: 4 scripted picks carried to the goal, 4 of random actions."""
    from torchrl_reward.envs import ManiSkillEnv
    from torchrl_reward.envs.scripted import ScriptedPickPolicy

    root = tmp_path_factory.mktemp("pick_or_idle")
    env = ManiSkillEnv(
        pixels=True,
        image_size=64,
        max_episode_steps=24,
        control_mode="pd_ee_delta_pos",
        ignore_terminations=True,
    )
    recorder = EpisodeRecorder(root, target_success=4, target_failure=4)
    tenv = TransformedEnv(env, recorder)
    try:
        for index in range(8):
            tenv.set_seed(100 + index)
            policy = ScriptedPickPolicy() if index % 2 == 0 else None
            tenv.rollout(24, policy, break_when_any_done=False)
        recorder.flush()
    finally:
        recorder.close()
        env.close()
    assert recorder.counts["success"] >= 2 and recorder.counts["failure"] >= 2, recorder.counts
    return root


def test_placed_labels_learn_clearly_better_than_shuffled_ones(pick_or_idle, tmp_path):
    """A learning check: the same run on permuted labels must score far worse on validation."""
    config = dict(frame_label="placed", epochs=4, samples_per_epoch=128, plots=False)
    config["val_fraction"] = 0.25
    real = train_reward_model(_config(pick_or_idle, tmp_path / "real", **config))
    shuffled_data = _shuffled_copy(pick_or_idle, tmp_path / "shuffled", "is_obj_placed")
    shuffled = train_reward_model(_config(shuffled_data, tmp_path / "fake", **config))
    best = max(row["val/roc_auc"] for row in real.history)
    chance = max(row["val/roc_auc"] for row in shuffled.history)
    assert best >= 0.9 and best - chance >= 0.25, (best, chance)


def test_proprio_inputs_and_views_reach_the_checkpoint(reward_dataset, tmp_path):
    result = train_reward_model(
        _config(reward_dataset, tmp_path, model={"image_size": 32, "proprio": ["qvel"]}, epochs=1)
    )
    model = ResNetRewardModel.load(result.best_path)
    assert model.proprio == {"qvel": 9} and model.num_views == 1
    cache = build_frame_cache(reward_dataset)
    qvel = cache.extra("qvel")
    train_eps, _ = split_episodes(cache.episode_success, 0.2, seed=0)
    train_qvel = qvel[frames_of(cache, train_eps)]  # normalised by the training frames only
    torch.testing.assert_close(model.proprio_mean, train_qvel.mean(0))
    torch.testing.assert_close(model.proprio_std, train_qvel.std(0).clamp_min(1e-3))
    frames = cache.pixels[:4]
    with pytest.raises(ValueError, match=r"needs its proprio inputs \['qvel'\]"):
        model.predict_proba(frames)
    assert model.predict_proba(frames, qvel[:4]).shape == (4,)
    bad = qvel[:4].clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        model.predict_proba(frames, bad)


def test_labels_and_inputs_the_files_lack_name_a_file(reward_dataset, tmp_path):
    """RLinf's own files load, but asking them for a flag or input they lack says which file."""
    data = tmp_path / "rlinf"
    for path in list_episode_files(reward_dataset):
        episode = load_episode(path).exclude("is_obj_placed", "qvel")
        write_episode(data / path.relative_to(reward_dataset), episode)
    with pytest.raises(ValueError, match=r"episode_\d+\.pkl has no per-frame 'is_obj_placed'"):
        train_reward_model(_config(data, tmp_path / "a", frame_label="placed"))
    with pytest.raises(ValueError, match="has no per-frame 'qvel'"):
        train_reward_model(
            _config(data, tmp_path / "b", model={"image_size": 32, "proprio": ["qvel"]})
        )
    assert train_reward_model(_config(data, tmp_path / "c", epochs=1, plots=False)).history


def test_factored_head_learns_each_half_from_its_own_label(pick_or_idle, tmp_path):
    """model.head=factored: the proprio factor learns the static flag from the joint
    velocities, and the product scores success on held-out episodes."""
    model_cfg = {"image_size": 32, "proprio": ["qvel"], "head": "factored"}
    config = dict(epochs=4, samples_per_epoch=128, plots=False, val_fraction=0.25)
    result = train_reward_model(_config(pick_or_idle, tmp_path, model=model_cfg, **config))
    model = ResNetRewardModel.load(result.best_path)
    assert model.head_type == "factored"
    assert max(row["val/roc_auc"] for row in result.history) >= 0.9, result.history
    cache = build_frame_cache(pick_or_idle)
    qvel, static = cache.extra("qvel"), cache.extra("is_robot_static")
    with torch.no_grad():
        static_logit = model.proprio_logit(qvel)
    assert binary_metrics(torch.sigmoid(static_logit), static)["roc_auc"] >= 0.8  # chance: 0.5
    with pytest.raises(ValueError, match=r"needs frame_label=success and model\.proprio"):
        train_reward_model(_config(pick_or_idle, tmp_path / "b", model={"head": "factored"}))
