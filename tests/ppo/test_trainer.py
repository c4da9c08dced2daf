"""PPO smoke runs on the real env: logs, checkpoints, resume, bad checkpoints."""

from types import SimpleNamespace

import pytest
import torch
from tensordict import TensorDict
from torchrl.data import Bounded, Composite, Unbounded

from torchrl_reward.envs import ManiSkillEnv
from torchrl_reward.hydra_configs import load_config
from torchrl_reward.models import ResNetRewardModel
from torchrl_reward.ppo import RenderOptions, make_ppo_config, make_ppo_models, train_ppo
from torchrl_reward.ppo.checkpoint import checkpoint_path, save_checkpoint
from torchrl_reward.ppo.trainer import (
    _checkpoint_state,
    _initialise,
    _make_learner,
    _mark_no_bootstrap,
    _Progress,
    _rendering,
    _reward_name,
    evaluate,
    make_reward_transform,
)

pytestmark = pytest.mark.slow

LOGIT = 2.0
P_SUCCESS = torch.sigmoid(torch.tensor(LOGIT)).item()  # 0.88, far from any dense reward mean

SMALL = [
    "env.num_envs=2",
    "env.max_episode_steps=10",
    "ppo.num_steps=10",
    "ppo.num_epochs=2",
    "ppo.num_minibatches=2",
    "ppo.hidden_sizes=[32,32]",
    "eval.interval=2",
    "eval.num_episodes=1",
    "runner.save_interval=1",
    "runner.progress=false",
]


def _learned(model_path, *extra):
    """A small learned-reward run (64 px frames, no evaluation) scoring with ``model_path``."""
    return [
        *SMALL,
        "eval.interval=0",
        "env.image_size=64",
        "reward=resnet",
        f"reward.resnet.checkpoint_path={model_path}",
        "reward.device=cpu",
        *extra,
    ]


def _typed(overrides):
    """``configs/ppo.yaml`` with ``overrides``, as the typed config the trainer's parts take."""
    return make_ppo_config(load_config("ppo", overrides))


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ppo")
    cfg = load_config("ppo", [*SMALL, "ppo.total_frames=40"])
    metrics = train_ppo(cfg, run_dir)
    return run_dir, metrics


def test_two_iterations_write_logs_and_checkpoint(first_run):
    run_dir, metrics = first_run
    scalars = run_dir / "logs" / "scalars"
    for name in ("rollout/rewards", "train/loss_objective", "time/collecting", "eval/success_once"):
        rows = (scalars / f"{name}.csv").read_text().strip().splitlines()
        assert len(rows) >= 1, name
    assert (scalars / "env/success_once.csv").exists()
    # Phases are timed per iteration, and only those that ran are logged: eval on the 2nd.
    assert len((scalars / "time/collecting.csv").read_text().splitlines()) == 2
    assert len((scalars / "time/eval.csv").read_text().splitlines()) == 1
    assert "time/reward_share" not in metrics
    state = torch.load(checkpoint_path(run_dir), weights_only=False)
    assert state["collected_frames"] == 40 and state["iteration"] == 2
    assert "eval/success_once" in metrics
    assert metrics["train/epochs"] == 2  # no target_kl: every epoch runs
    assert 0.0 < metrics["time/elapsed"] == pytest.approx(state["elapsed"])


def test_target_kl_stops_the_epochs_early(first_run, tmp_path):
    run_dir, _ = first_run
    # A negative bound is passed by any update: one epoch per iteration.
    cfg = load_config(
        "ppo",
        [*SMALL, "ppo.total_frames=20", "ppo.target_kl=-1.0", f"runner.init_from={run_dir}"],
    )
    assert train_ppo(cfg, tmp_path)["train/epochs"] == 1


def test_resume_continues_from_checkpoint(first_run, tmp_path):
    run_dir, _ = first_run
    before = torch.load(checkpoint_path(run_dir), weights_only=False)
    cfg = load_config("ppo", [*SMALL, "ppo.total_frames=40", f"runner.resume_dir={run_dir}"])
    # Same reward as the checkpoint: the interrupted run is finished, not restarted.
    train_ppo(cfg, tmp_path)
    assert not checkpoint_path(tmp_path).exists()
    cfg = load_config(
        "ppo",
        [*SMALL, "ppo.total_frames=20", f"runner.resume_dir={run_dir}", "env.reward_mode=sparse"],
    )
    train_ppo(cfg, tmp_path)  # another reward: warm start for ppo.total_frames more
    after = torch.load(checkpoint_path(tmp_path), weights_only=False)
    assert after["collected_frames"] == before["collected_frames"] + 20
    assert after["iteration"] == before["iteration"] + 1


def test_init_from_starts_a_new_run_from_the_weights(first_run, tmp_path):
    run_dir, _ = first_run
    cfg = load_config("ppo", [*SMALL, "ppo.total_frames=20", f"runner.init_from={run_dir}"])
    train_ppo(cfg, tmp_path)  # same reward as the checkpoint, yet a new run: fresh budget
    after = torch.load(checkpoint_path(tmp_path), weights_only=False)
    assert after["collected_frames"] == 20 and after["iteration"] == 1
    cfg = load_config("ppo", [*SMALL, "ppo.hidden_sizes=[16]", f"runner.init_from={run_dir}"])
    with pytest.raises(ValueError, match="hidden_sizes"):
        train_ppo(cfg, tmp_path / "other")


def test_critic_warmup_leaves_the_actor_untouched(first_run, tmp_path):
    run_dir, _ = first_run
    start = torch.load(checkpoint_path(run_dir), weights_only=False)
    cfg = load_config(
        "ppo",
        [
            *SMALL,
            "ppo.total_frames=20",
            "ppo.critic_warmup_frames=1000",
            f"runner.init_from={run_dir}",
        ],
    )
    train_ppo(cfg, tmp_path)
    after = torch.load(checkpoint_path(tmp_path), weights_only=False)
    for name, value in start["actor"].items():
        torch.testing.assert_close(after["actor"][name], value, msg=name)
    changed = [not torch.equal(after["critic"][k], v) for k, v in start["critic"].items()]
    assert any(changed)


def test_checkpoint_state_is_what_a_resume_starts_from(tmp_path):
    """An interrupted run resumes at its progress with its weights and optimiser; on another
    reward the same checkpoint is a warm start with a fresh budget."""
    cfg = _typed(["ppo.hidden_sizes=[8]", "ppo.total_frames=30"])
    env = SimpleNamespace(  # the two specs a learner is sized from
        observation_spec=Composite(observation=Unbounded(shape=(4,))),
        action_spec_unbatched=Bounded(-1.0, 1.0, shape=(2,)),
    )
    learner = _make_learner(cfg, env, torch.device("cpu"))
    sum(p.sum() for p in learner.critic.parameters()).backward()
    learner.optim.step()  # an optimiser state to carry over
    metrics = {"time/elapsed": 1.5}
    state = _checkpoint_state(cfg, learner, _Progress(20, 2, 40), None, metrics)
    assert state["reward"] == "normalized_dense" and state["reward_backend"] is None
    assert state["config"]["ppo"]["total_frames"] == 30
    save_checkpoint(checkpoint_path(tmp_path), state)

    resume = _typed(["ppo.hidden_sizes=[8]", f"runner.resume_dir={tmp_path}"])
    resumed = _make_learner(resume, env, torch.device("cpu"))
    start = _initialise(resume, resumed, _reward_name(resume))
    assert start.progress == _Progress(20, 2, 40) and start.elapsed == 1.5
    for name, value in learner.actor.state_dict().items():
        torch.testing.assert_close(resumed.actor.state_dict()[name], value, msg=name)
    steps = [v["step"] for v in resumed.optim.state_dict()["state"].values()]
    assert steps and all(step == 1 for step in steps)

    sparse = _typed(
        [
            "ppo.hidden_sizes=[8]",
            "ppo.total_frames=30",
            f"runner.resume_dir={tmp_path}",
            "env.reward_mode=sparse",
        ]
    )
    start = _initialise(sparse, _make_learner(sparse, env, torch.device("cpu")), "sparse")
    assert start.progress == _Progress(20, 2, 50) and start.elapsed == 0.0


def test_state_only_arms_render_nothing_unless_recording():
    assert _rendering(_typed([]), None) == (False, RenderOptions())
    assert _rendering(_typed(["collect.enabled=true"]), None) == (True, RenderOptions())


def test_success_terminations_keep_their_value():
    data = TensorDict(
        {
            "next": {
                "terminated": torch.tensor([[True], [False], [True]]),
                "success": torch.tensor([[True], [False], [False]]),
            }
        },
        batch_size=[3],
    )
    _mark_no_bootstrap(data)
    no_bootstrap = data["next", "terminated_not_success"].squeeze(-1)
    assert no_bootstrap.tolist() == [False, False, True]


def test_resume_rejects_incompatible_checkpoint(first_run, tmp_path):
    run_dir, _ = first_run
    cfg = load_config("ppo", [*SMALL, "ppo.hidden_sizes=[16]", f"runner.resume_dir={run_dir}"])
    with pytest.raises(ValueError, match="hidden_sizes"):
        train_ppo(cfg, tmp_path)


def test_resume_from_missing_checkpoint_says_where(tmp_path):
    cfg = load_config("ppo", [*SMALL, f"runner.resume_dir={tmp_path / 'nope'}"])
    with pytest.raises(FileNotFoundError, match="No PPO checkpoint"):
        train_ppo(cfg, tmp_path)


def test_learned_reward_run_logs_model_rewards_and_agreement(tmp_path, constant_reward_model):
    """``reward=resnet``: the model's rewards replace the env's, with timing and agreement."""
    model_path = constant_reward_model(LOGIT).save(tmp_path / "reward.pt")
    cfg = load_config("ppo", _learned(model_path, "ppo.total_frames=40"))
    metrics = train_ppo(cfg, tmp_path / "run")
    assert metrics["rollout/rewards"] == pytest.approx(P_SUCCESS, abs=1e-6)  # not the env's
    # Episode returns are of the reward PPO optimises: 10 steps of the model's reward.
    assert metrics["env/episode_return"] == pytest.approx(10 * P_SUCCESS, abs=1e-5)
    assert metrics["time/compute_model_rewards"] > 0.0  # seconds, as every time/* entry
    assert 0.0 < metrics["time/reward_share"] < 1.0
    for key in ("precision", "recall", "fpr", "accuracy"):
        assert f"reward_model/{key}" in metrics
    rows = (tmp_path / "run/logs/scalars/reward_model/fpr.csv").read_text().splitlines()
    assert len(rows) == 2


@pytest.mark.parametrize("final_steps", [1, 3])
def test_terminal_only_learned_reward_renders_and_pays_only_final_frames(
    tmp_path, final_steps, constant_reward_model
):
    model_path = constant_reward_model(LOGIT).save(tmp_path / "reward.pt")
    overrides = _learned(
        model_path,
        "ppo.total_frames=20",
        "reward.terminal_only=true",
        f"reward.final_steps={final_steps}",
    )
    cfg = _typed(overrides)
    transform = make_reward_transform(cfg.reward)
    assert _rendering(cfg, transform) == (True, RenderOptions(frames="done", window=final_steps))
    recording = _typed([*overrides, "collect.enabled=true"])
    assert _rendering(recording, transform) == (True, RenderOptions())
    metrics = train_ppo(cfg, tmp_path / "run")
    # 2 envs x 10 steps, one episode each: the last final_steps frames carry the model's reward.
    assert metrics["rollout/rewards"] == pytest.approx(2 * final_steps / 20 * P_SUCCESS, abs=1e-6)
    assert "reward_model/fpr" in metrics


def test_final_steps_needs_terminal_only_and_no_recording(tmp_path, constant_reward_model):
    model_path = constant_reward_model(LOGIT).save(tmp_path / "reward.pt")
    overrides = _learned(model_path, "reward.final_steps=3")
    with pytest.raises(ValueError, match="terminal_only"):
        make_reward_transform(_typed(overrides).reward)
    recording = load_config(
        "ppo", [*overrides, "reward.terminal_only=true", "collect.enabled=true"]
    )
    with pytest.raises(ValueError, match="record in a run of its own"):
        train_ppo(recording, tmp_path / "run")


@pytest.mark.parametrize(("speed", "paid_share"), [(1e3, 1.0), (1e-4, 0.0)])
def test_static_gate_renders_and_pays_only_frames_of_a_still_arm(
    tmp_path, speed, paid_share, constant_reward_model
):
    """``reward.render_max_joint_speed``: the env renders only frames whose arm joints are all
    slower; only those are scored, the rest are paid 0 (a still arm is rare under noise)."""
    model_path = constant_reward_model(LOGIT).save(tmp_path / "reward.pt")
    overrides = _learned(
        model_path, "ppo.total_frames=20", f"reward.render_max_joint_speed={speed}"
    )
    cfg = _typed(overrides)
    transform = make_reward_transform(cfg.reward)
    assert _rendering(cfg, transform) == (True, RenderOptions(max_joint_speed=speed))
    metrics = train_ppo(cfg, tmp_path / "run")
    assert metrics["rollout/rewards"] == pytest.approx(paid_share * P_SUCCESS, abs=1e-6)
    # The skipped frames count as the model's calls of failure, every frame judged.
    assert metrics["reward_model/accuracy"] == pytest.approx(1.0 - paid_share)
    assert metrics["reward_model/scored_share"] == pytest.approx(paid_share)


def test_static_gate_needs_a_per_step_success_model(tmp_path, constant_reward_model):
    success = constant_reward_model(LOGIT).save(tmp_path / "success.pt")
    placed = constant_reward_model(LOGIT).save(
        tmp_path / "placed.pt", training_config={"frame_label": "placed"}
    )
    overrides = [*SMALL, "reward=resnet", "reward.device=cpu", "reward.render_max_joint_speed=0.4"]
    with pytest.raises(ValueError, match="terminal_only"):
        make_reward_transform(
            _typed(
                [
                    *overrides,
                    f"reward.resnet.checkpoint_path={success}",
                    "reward.terminal_only=true",
                ]
            ).reward
        )
    for extra, match in (
        ([f"reward.resnet.checkpoint_path={placed}"], "frame_label is 'placed'"),
        ([f"reward.resnet.checkpoint_path={success}", "collect.enabled=true"], "run of its own"),
    ):
        with pytest.raises(ValueError, match=match):
            train_ppo(load_config("ppo", [*overrides, *extra]), tmp_path / "run")


def test_learned_reward_without_checkpoint_says_how(tmp_path):
    cfg = load_config("ppo", [*SMALL, "reward=resnet"])
    with pytest.raises(ValueError, match=r"reward.resnet.checkpoint_path"):
        train_ppo(cfg, tmp_path)


def test_reward_config_passes_backend_options(tmp_path):
    path = ResNetRewardModel(image_size=32).save(tmp_path / "reward.pt")
    cfg = _typed(
        [
            "reward=resnet",
            f"reward.resnet.checkpoint_path={path}",
            "reward.device=cpu",
            "reward.backend=torch",
            "reward.backend_kwargs.amp_dtype=bfloat16",
        ]
    )
    assert make_reward_transform(cfg.reward).backend.name == "torch-bfloat16"


def test_seeded_evaluations_replay_the_same_episodes():
    env = ManiSkillEnv("PickCube-v1", max_episode_steps=10)
    try:
        torch.manual_seed(0)
        actor, _ = make_ppo_models(42, env.action_spec_unbatched, [32, 32])
        first = evaluate(actor, env, 2, seed=5)
        torch.rand(100)  # what PPO draws between evaluations must not change their episodes
        assert evaluate(actor, env, 2, seed=5) == first
        assert evaluate(actor, env, 2, seed=6) != first
    finally:
        env.close()
