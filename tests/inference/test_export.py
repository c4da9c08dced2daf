"""export_reward: the export folder, its manifest and its checks."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensordict import TensorDict

from torchrl_reward.data import write_episode
from torchrl_reward.inference import (
    OnnxBackend,
    export_reward,
    file_sha256,
    frames_from_episodes,
    load_manifest,
    load_validation_frames,
    load_validation_proprio,
    read_onnx_metadata,
)
from torchrl_reward.inference.export import export_from_episodes
from torchrl_reward.models import ResNetRewardModel
from torchrl_reward.training import build_frame_cache, split_episodes, train_reward_model


def test_writes_files_and_manifest(model, frames, export_dir):
    names = {p.name for p in export_dir.iterdir()}
    assert {"reward_fp32.onnx", "reward_int8.onnx", "reward_fp16.onnx"} <= names
    assert {"validation_frames.pt", "export.json"} <= names
    manifest = json.loads((export_dir / "export.json").read_text())
    assert manifest["image_size"] == model.image_size and manifest["chunk_size"] == 16
    backends = manifest["backends"]
    assert backends["torch"]["ms_per_chunk"] > 0
    fp32 = backends["onnxruntime-fp32"]
    assert fp32["passed"] and fp32["agreement"] == 1.0 and fp32["max_abs_diff"] < 1e-4
    assert fp32["sha256"] == file_sha256(export_dir / "reward_fp32.onnx")
    assert fp32["frames"] == frames.shape[0] - 24
    int8 = backends["onnxruntime-int8"]
    assert {"agreement", "passed", "path"} <= set(int8)
    metadata = read_onnx_metadata(export_dir / "reward_int8.onnx")
    assert metadata["float_first_conv"] == int8["float_first_conv"]
    assert backends["tensorrt-fp16"]["sha256"] == file_sha256(export_dir / "reward_fp16.onnx")
    assert torch.equal(load_validation_frames(export_dir), frames[24:])


def test_manifest_is_tied_to_the_weights(model, export_dir, tmp_path):
    assert load_manifest(export_dir, model)["format"] == "torchrl_reward.export"
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.head[-1].weight.mul_(2)
    with pytest.raises(ValueError, match="exported from other weights"):
        load_manifest(export_dir, other)
    with pytest.raises(FileNotFoundError, match="export the checkpoint first"):
        load_manifest(tmp_path, model)
    (tmp_path / "export.json").write_text("{truncated")
    with pytest.raises(ValueError, match="unreadable"):
        load_manifest(tmp_path, model)


def test_int8_first_conv_goes_back_to_float_when_parity_fails(model, frames, tmp_path):
    # No backend can agree on more than all labels: both int8 variants are tried and rejected.
    manifest = export_reward(
        model, tmp_path, frames[24:], calibration_frames=frames[:24], fp16=False, min_agreement=1.01
    )
    int8 = manifest["backends"]["onnxruntime-int8"]
    assert not int8["passed"] and int8["float_first_conv"]
    assert read_onnx_metadata(tmp_path / "reward_int8.onnx")["float_first_conv"]


def test_validation_frames_are_checked(model, frames, tmp_path):
    with pytest.raises(ValueError, match="empty"):
        export_reward(model, tmp_path, frames[:0])
    with pytest.raises(TypeError, match="uint8"):
        export_reward(model, tmp_path, frames.float())


def _write_episodes(root, frames, per_episode: int = 8) -> None:
    for i, chunk in enumerate(frames.split(per_episode)):
        t = chunk.shape[0]
        success = torch.zeros(t, dtype=torch.bool)
        success[-1] = i % 2 == 0
        episode = TensorDict(
            {
                "pixels": chunk,
                "observation": torch.zeros(t, 42),
                "action": torch.zeros(t, 8),
                "reward": torch.zeros(t),
                "done": success.clone(),
                "success": success,
                "is_grasped": torch.zeros(t, dtype=torch.bool),
            },
            batch_size=[t],
        )
        folder = "success" if success.any() else "failure"
        write_episode(root / folder / f"episode_{i:06d}.pkl", episode)


def test_frames_from_episodes_splits_by_episode(frames, tmp_path, caplog):
    _write_episodes(tmp_path, frames)  # 6 episodes of 8 frames
    with caplog.at_level("WARNING", logger="torchrl_reward.inference.export"):
        calibration, validation = frames_from_episodes(tmp_path, max_calibration=10)
    assert "falling back to parity frames from every other episode file" in caplog.text
    calibration, validation = calibration["pixels"], validation["pixels"]
    assert calibration.shape == (10, *frames.shape[1:]) and validation.shape[0] == 24
    rows = {bytes(f.numpy()) for f in validation}
    assert not rows & {bytes(f.numpy()) for f in calibration}  # no shared episode
    unseen = ["success/episode_000099.pkl"]  # the model's validation episodes, recorded elsewhere
    with pytest.raises(ValueError, match=r"None of the 1 parity episodes.*held_out=true"):
        frames_from_episodes(tmp_path, parity_episodes=unseen)
    with caplog.at_level("WARNING", logger="torchrl_reward.inference.export"):
        caplog.clear()
        held_out = frames_from_episodes(
            tmp_path, max_calibration=10, parity_episodes=unseen, held_out=True
        )
    assert not caplog.text  # a held-out recording is split on purpose, no fallback warning
    assert torch.equal(held_out[1]["pixels"], validation)
    _write_episodes(tmp_path / "one", frames[:8])
    with pytest.raises(ValueError, match="at least 2"):
        frames_from_episodes(tmp_path / "one")


def test_frames_from_episodes_spreads_each_side_over_the_episodes_timelines(tmp_path):
    """More episodes than a side's cap, one frame each: from different points of their
    episodes, not all first frames (a still arm at reset, on which int8 calibrated nothing)."""
    steps = torch.arange(8, dtype=torch.uint8).repeat(8)  # 8 episodes, frames show steps 0-7
    _write_episodes(tmp_path, steps.view(-1, 1, 1, 1).expand(-1, 4, 4, 3).contiguous())
    sides = frames_from_episodes(tmp_path, max_calibration=4, max_validation=4, held_out=True)
    for side in sides:  # 4 episodes a side
        assert len(set(side["pixels"][:, 0, 0, 0].tolist())) == 4


def test_frames_from_episodes_skips_a_corrupt_file_and_names_it(frames, tmp_path):
    _write_episodes(tmp_path, frames)
    victim = tmp_path / "failure" / "episode_000003.pkl"
    victim.write_bytes(victim.read_bytes()[:100])
    with pytest.warns(RuntimeWarning, match=r"Skipped 1 .*: failure/episode_000003\.pkl"):
        _, validation = frames_from_episodes(
            tmp_path, parity_episodes=["failure/episode_000003.pkl", "success/episode_000004.pkl"]
        )
    assert torch.equal(validation["pixels"], frames[32:40])  # episode 4's frames only


def test_export_script(model, frames, tmp_path):
    _write_episodes(tmp_path / "episodes", frames)
    checkpoint = model.save(tmp_path / "reward.pt")
    script = Path(__file__).resolve().parents[2] / "scripts" / "export_reward.py"
    done = subprocess.run(
        [
            sys.executable,
            str(script),
            f"checkpoint_path={checkpoint}",
            f"episodes_dir={tmp_path / 'episodes'}",
            "chunk_size=16",
            "fp16=false",
            "int8=false",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "onnxruntime-fp32" in done.stdout and "passed" in done.stdout
    manifest = load_manifest(tmp_path / "reward_export", model)
    assert manifest["validation_frames"] == 24
    assert set(manifest["backends"]) == {"torch", "onnxruntime-fp32"}


def test_exports_the_views_the_model_was_trained_on(frames, tmp_path):
    """A model trained on view 0 of two-view episodes exports from those same episode files."""
    side = frames.flip(2)  # a second view, mirrored
    _write_episodes(tmp_path / "episodes", torch.cat([frames, side], dim=2))  # [48, 32, 64, 3]
    trained = train_reward_model(
        {
            "data_path": str(tmp_path / "episodes"),
            "save_dir": str(tmp_path / "model"),
            "views": [0],
            "epochs": 1,
            "samples_per_epoch": 16,
            "micro_batch_size": 8,
            "global_batch_size": 8,
            "plots": False,
            "progress": False,
            "device": "cpu",
        }
    )
    model = ResNetRewardModel.load(trained.best_path)
    assert model.frame_shape == (32, 32, 3)
    manifest = export_from_episodes(
        model, tmp_path / "export", tmp_path / "episodes", int8=False, fp16=False, chunk_size=16
    )
    assert manifest["backends"]["onnxruntime-fp32"]["passed"]
    # Parity frames come from the training run's validation episodes, and only from them.
    recorded = model.checkpoint_metadata["validation_episodes"]
    cache = build_frame_cache(tmp_path / "episodes")
    _, val_eps = split_episodes(cache.episode_success, 0.2, seed=0)
    assert recorded == [cache.files[i] for i in val_eps.tolist()]
    owner = {
        bytes(frame.numpy()): f"{'failure' if i % 2 else 'success'}/episode_{i:06d}.pkl"
        for i, chunk in enumerate(frames.split(8))
        for frame in chunk
    }
    parity_frames = load_validation_frames(tmp_path / "export")
    assert parity_frames.shape == (8 * len(recorded), 32, 32, 3)
    assert {owner[bytes(f.numpy())] for f in parity_frames} == set(recorded)


def _export_with_proprio(model, out, frames, qvel) -> dict:
    """``export_reward`` of a proprio model: 24 frames calibrate int8, the rest check parity."""
    return export_reward(
        model,
        out,
        frames[24:],
        validation_proprio=qvel[24:],
        calibration_frames=frames[:24],
        calibration_proprio=qvel[:24],
        fp16=False,
        chunk_size=16,
    )


def test_two_view_proprio_model_exports_quantises_and_passes_parity(tmp_path):
    """Views and proprio inputs go through ONNX export, int8 and the parity gate like images."""
    torch.manual_seed(0)
    model = ResNetRewardModel(image_size=32, num_views=2, proprio={"qvel": 9}).eval()
    generator = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (48, 32, 64, 3), dtype=torch.uint8, generator=generator)
    qvel = torch.randn(48, 9, generator=generator)
    model.threshold = float(model.predict_proba(frames[24:], qvel[24:]).median())
    with pytest.raises(ValueError, match=r"pass validation_proprio"):
        export_reward(model, tmp_path / "bad", frames[24:])
    manifest = _export_with_proprio(model, tmp_path / "out", frames, qvel)
    assert manifest["num_views"] == 2 and manifest["proprio"] == {"qvel": 9}
    assert manifest["backends"]["onnxruntime-fp32"]["passed"]
    assert manifest["backends"]["onnxruntime-fp32"]["max_abs_diff"] < 1e-4
    assert "agreement" in manifest["backends"]["onnxruntime-int8"]
    assert torch.equal(load_validation_proprio(tmp_path / "out"), qvel[24:])
    backend = OnnxBackend(tmp_path / "out" / "reward_fp32.onnx", chunk_size=16)
    probs = backend(frames[:5], qvel[:5])
    torch.testing.assert_close(probs, model.predict_proba(frames[:5], qvel[:5]), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r"pass float \[5, 9\]"):
        backend(frames[:5])


def test_factored_model_exports_with_its_product_inside_the_graph(tmp_path):
    """The factored head's and_logit is part of the exported network: ONNX Runtime returns
    the product of the two factors' probabilities, and int8 goes through the parity gate. The
    trunk is the 2-stage one the kept model has."""
    torch.manual_seed(0)
    model = ResNetRewardModel(image_size=32, proprio={"qvel": 9}, head="factored", stages=2)
    model.eval()
    generator = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (48, 32, 32, 3), dtype=torch.uint8, generator=generator)
    qvel = torch.randn(48, 9, generator=generator)
    model.threshold = float(model.predict_proba(frames[24:], qvel[24:]).median())
    manifest = _export_with_proprio(model, tmp_path / "out", frames, qvel)
    assert manifest["backends"]["onnxruntime-fp32"]["passed"]
    assert "agreement" in manifest["backends"]["onnxruntime-int8"]
    backend = OnnxBackend(tmp_path / "out" / "reward_fp32.onnx", chunk_size=16)
    placed, static = model.factor_logits(frames[:5], qvel[:5])
    product = torch.sigmoid(placed) * torch.sigmoid(static)
    torch.testing.assert_close(backend(frames[:5], qvel[:5]), product.detach(), atol=1e-5, rtol=0)
