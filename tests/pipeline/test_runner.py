"""The main job at the tiny preset on the real env: every artefact, consistent figures, rerun."""

import json
import math
import pickle
import re
from statistics import mean

import pytest
import torch

from torchrl_reward.data import list_episode_files
from torchrl_reward.hydra_configs import load_config
from torchrl_reward.inference import make_backend
from torchrl_reward.models import ResNetRewardModel
from torchrl_reward.pipeline import StageError, run_pipeline
from torchrl_reward.pipeline.report import classifier_verdict
from torchrl_reward.ppo.checkpoint import checkpoint_path
from torchrl_reward.ppo.ray_runner import SEED_STRIDE
from torchrl_reward.viz import read_scalar

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("pipeline")
    cfg = load_config("pipeline", ["preset=tiny", f"run_dir={run_dir}"])
    assert run_pipeline(cfg) == run_dir
    return run_dir, cfg


def test_report_and_every_artefact_exist(tiny_run):
    run_dir, _ = tiny_run
    for name in (
        "report.md",
        "example_frames.png",
        "ppo_success.png",
        "ppo_rewards.png",
        "reward_model/reward_model_best.pt",
        "reward_model/curves.png",
        "reward_model/roc.png",
        "reward_export/export.json",
        "reward_export/reward_fp32.onnx",
        "ppo/checkpoints/ppo_last.pt",
        "ppo_dense/checkpoints/ppo_last.pt",
    ):
        assert (run_dir / name).is_file(), name
    state = json.loads((run_dir / "pipeline.json").read_text())
    assert state["complete"] and all(s["complete"] for s in state["stages"].values())


def test_report_figures_match_the_logs_and_files(tiny_run):
    run_dir, cfg = tiny_run
    state = json.loads((run_dir / "pipeline.json").read_text())
    counts = state["stages"]["collect"]["counts"]
    files = list_episode_files(run_dir / "data")
    on_disk = {k: sum(f.parent.name == k for f in files) for k in ("success", "failure")}
    assert counts == on_disk
    assert counts["success"] >= cfg.collect.target_success
    assert counts["failure"] >= cfg.collect.target_failure
    report = (run_dir / "report.md").read_text()
    assert f"success: {counts['success']}, failure: {counts['failure']}" in report
    assert _agreement_fpr_row(run_dir) in report
    threshold = state["stages"]["train"]["threshold"]
    assert f"{threshold:.3f}" in report
    metrics = state["stages"]["train"]["metrics"]
    label = cfg.train.get("frame_label", "success")
    verdict = classifier_verdict(metrics, label, proprio=bool(cfg.train.model.proprio))
    assert verdict in report  # the verdict in words, at the top


def test_dense_arm_runs_the_learned_runs_budget_on_the_env_reward(tiny_run):
    """The comparison arm: same start, seed and frames, the dense reward, no reward model."""
    run_dir, _ = tiny_run
    stages = json.loads((run_dir / "pipeline.json").read_text())["stages"]
    dense, learned = stages["ppo_dense"], stages["ppo"]
    assert dense["frames"] == learned["frames"]
    steps = {
        arm: list(read_scalar(run_dir / arm / "logs", "rollout/rewards")[0])
        for arm in ("ppo", "ppo_dense")
    }
    assert steps["ppo_dense"] == steps["ppo"]  # the same frames, iteration for iteration
    with pytest.raises(FileNotFoundError):
        read_scalar(run_dir / "ppo_dense" / "logs", "reward_model/fpr")
    report = (run_dir / "report.md").read_text()
    assert f"dense reward instead ({dense['frames']} frames" in report


def test_ppo_scores_with_the_backend_auto_picks_from_the_export(tiny_run):
    """The export stage's folder is PPO's export_dir, and the report names the backend used."""
    run_dir, _ = tiny_run
    stages = json.loads((run_dir / "pipeline.json").read_text())["stages"]
    export_dir = stages["export"]["export_dir"]
    ppo = torch.load(checkpoint_path(run_dir / "ppo"), weights_only=False)
    assert ppo["config"]["reward"]["export_dir"] == export_dir
    model = ResNetRewardModel.load(stages["train"]["checkpoint"])
    expected = make_backend(model, "auto", device="cpu", export_dir=export_dir).name
    assert stages["ppo"]["reward_backend"] == expected
    report = (run_dir / "report.md").read_text()
    assert f"| reward backend | {expected} |" in report
    for name in ("onnxruntime-fp32", "onnxruntime-int8"):  # both checked, at 3 decimals
        entry = stages["export"]["backends"][name]
        verdict = "passed" if entry["passed"] else "rejected"
        assert f"{name} {entry['agreement']:.3f} {verdict}" in report


def _agreement_fpr_row(run_dir) -> str:
    """The report's online FPR row, as the PPO stage's logs say it should read."""
    fpr = read_scalar(run_dir / "ppo" / "logs", "reward_model/fpr")[1]
    fpr = [v for v in fpr if not math.isnan(v)]  # undefined (no true negatives) is NaN
    expected = f"{mean(fpr):.3f}" if fpr else "n/a"
    return f"| online agreement fpr (mean over iterations) | {expected} |"


def test_verdict_says_whether_the_classifier_can_serve_as_a_reward():
    counts = {"tp": 9, "fn": 1}
    assert "works" in classifier_verdict({"recall": 0.9, "fpr": 0.01, **counts}, "placed", False)
    unusable = classifier_verdict({"recall": 0.0, "fpr": 0.01, **counts}, "success", False)
    assert "not usable" in unusable and "model.proprio=[qvel]" in unusable
    assert "10 positive frames" in unusable
    weak = classifier_verdict({"recall": 0.5, "fpr": 0.01, **counts}, "success", True)
    assert "too few success frames" in weak


def test_rerun_reuses_finished_stages(tiny_run, capsys):
    run_dir, cfg = tiny_run
    before = (run_dir / "reward_model" / "reward_model_best.pt").stat().st_mtime
    run_pipeline(cfg)
    out = capsys.readouterr().out
    assert out.count("reused") == 6  # every stage, the dense arm too
    assert (run_dir / "reward_model" / "reward_model_best.pt").stat().st_mtime == before
    # Stopped after the export wrote its manifest, before the stage was marked done: kept.
    manifest = run_dir / "reward_export" / "export.json"
    exported = manifest.stat().st_mtime
    state = json.loads((run_dir / "pipeline.json").read_text())
    del state["stages"]["export"]
    (run_dir / "pipeline.json").write_text(json.dumps(state))
    run_pipeline(cfg)
    assert manifest.stat().st_mtime == exported
    assert json.loads((run_dir / "pipeline.json").read_text())["stages"]["export"]["complete"]


def test_collects_while_the_kept_policy_trains(tmp_path, capsys):
    """The CPU preset's path: PPO from the policy kept in the repo records the episodes, its
    progress bar counting episodes toward the targets. The learned-reward run logs to
    TensorBoard here, and the report reads it as it reads the CSV logger. With the export off,
    PPO scores with torch."""
    cfg = load_config(
        "pipeline",
        [
            "preset=tiny",
            f"run_dir={tmp_path}",
            "collect.policy=ppo",
            "ppo_init=kept_bc",
            "export.enabled=false",
            "dense_arm=false",
        ],
    )
    cfg.ppo_overrides.append("logger.backend=tensorboard")
    run_pipeline(cfg)
    bars = capsys.readouterr().err
    assert re.search(r"\| 4/4 \[", bars)  # 2 + 2 episodes, not frames
    assert not (tmp_path / "ppo" / "logs" / "scalars").exists()
    report = (tmp_path / "report.md").read_text()
    assert _agreement_fpr_row(tmp_path) in report
    assert "| reward backend | torch |" in report and not (tmp_path / "reward_export").exists()
    assert "dense reward instead" not in report and not (tmp_path / "ppo_dense").exists()
    state = json.loads((tmp_path / "pipeline.json").read_text())
    counts = state["stages"]["collect"]["counts"]
    assert counts["success"] >= 2 and counts["failure"] >= 2
    for stage in ("collect_ppo", "ppo"):
        ppo = torch.load(checkpoint_path(tmp_path / stage), weights_only=False)
        assert ppo["control_mode"] == "pd_ee_delta_pos"  # taken from the kept checkpoint
        assert ppo["config"]["ppo"]["lr"] == pytest.approx(3e-5)


def test_failing_stage_names_itself_and_its_log(tmp_path):
    cfg = load_config("pipeline", ["preset=tiny", f"run_dir={tmp_path}", "collect.policy=teleop"])
    with pytest.raises(StageError, match=r"stage 'collect' failed: .*teleop.*collect\.log"):
        run_pipeline(cfg)
    assert (tmp_path / "collect.log").read_text()


@pytest.mark.ray
def test_collect_and_ppo_stages_on_ray(tmp_path):
    """``runner=ray``: both PPO stages step remote collectors (2 x 1 env), the episodes of both
    land in the one data folder, and the learned reward is scored by the reward actor."""
    cfg = load_config(
        "pipeline",
        [
            "preset=tiny",
            f"run_dir={tmp_path}",
            "runner=ray",
            "runner.num_collectors=2",
            "runner.object_store_mb=200",
            "collect.policy=ppo",
            "ppo_init=kept_bc",
            "export.enabled=false",
            "dense_arm=false",
        ],
    )
    cfg.ppo_overrides.append("ppo.total_frames=20")  # one batch: 2 collectors x 10 steps
    run_pipeline(cfg)
    records = [pickle.loads(f.read_bytes()) for f in list_episode_files(tmp_path / "data")]
    assert len({r["episode_id"] for r in records}) == len(records)
    assert {r["seed"] for r in records} == {cfg.seed, cfg.seed + SEED_STRIDE}  # both collectors
    counts = json.loads((tmp_path / "pipeline.json").read_text())["stages"]["collect"]["counts"]
    assert counts["success"] >= 2 and counts["failure"] >= 2
    for stage in ("collect_ppo", "ppo"):
        state = torch.load(checkpoint_path(tmp_path / stage), weights_only=False)
        assert state["config"]["runner"]["name"] == "ray"
    assert state["reward_backend"] == "ray-torch"
