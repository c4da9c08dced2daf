"""ManiSkillEnv on the real simulator (CPU physx, lavapipe rendering): specs, pixels, resets."""

from functools import partial

import pytest
import torch
from torchrl.envs import ParallelEnv
from torchrl.envs.utils import check_env_specs

from torchrl_reward.envs import ManiSkillEnv
from torchrl_reward.envs.maniskill import VIEWS, _resolve_backends, resolve_views

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pixel_env():
    env = ManiSkillEnv("PickCube-v1", pixels=True, image_size=64, max_episode_steps=10)
    yield env
    env.close()


def test_specs_pass_check_env_specs(pixel_env):
    check_env_specs(pixel_env, seed=0)


def test_pixels_are_uint8_hwc_after_step(pixel_env):
    td = pixel_env.rollout(3)
    pixels = td["next", "pixels"]
    assert pixels.dtype == torch.uint8
    assert pixels.shape == (1, 3, 64, 64, 3)
    assert pixels.float().std() > 0  # a rendered scene, not a blank frame
    flags = ("success", "is_grasped", "is_obj_placed", "is_robot_static")
    for key in (*flags, "done", "terminated", "truncated"):
        assert td["next", key].shape == (1, 3, 1) and td["next", key].dtype == torch.bool
    assert td["next", "observation"].shape == (1, 3, 42)
    # The robot's joint state, the same values as the state observation's first 18.
    torch.testing.assert_close(td["next", "qpos"], td["next", "observation"][..., :9])
    torch.testing.assert_close(td["next", "qvel"], td["next", "observation"][..., 9:18])


@pytest.fixture(scope="module")
def two_view_env():
    env = ManiSkillEnv(
        "PickCube-v1", pixels=True, image_size=64, max_episode_steps=10, views=["goal", "front"]
    )
    yield env
    env.close()


def _goal_frames(env) -> list[torch.Tensor]:
    env.set_seed(0)
    env.reset()
    goal = env.base_env.goal_site
    frames = []
    for xyz in ((0.06, 0.06, 0.06), (-0.06, -0.06, 0.06)):
        goal.set_pose(goal.pose.__class__.create_from_pq(p=torch.tensor([xyz])))
        frames.append(env.base_env.render().clone())
    return frames


def test_goal_marker_is_visible(pixel_env):
    """Moving only the goal changes the frame: the camera shows the goal marker.

    The goal is put at two fixed spots low over the table, in front of the resting arm, so the
    check does not depend on where the episode's random goal (possibly behind the arm) is.
    """
    frames = _goal_frames(pixel_env)
    changed = (frames[0].int() - frames[1].int()).abs().amax(-1) > 30
    assert changed.sum() >= 10  # two blobs of goal-marker pixels, not noise


def test_every_view_is_tiled_and_shows_the_goal_marker(two_view_env):
    td = two_view_env.rollout(2)
    assert td["next", "pixels"].shape == (1, 2, 64, 128, 3)
    assert two_view_env.observation_spec["pixels"].shape == (1, 64, 128, 3)
    frames = _goal_frames(two_view_env)
    changed = (frames[0].int() - frames[1].int()).abs().amax(-1) > 30
    for view in range(2):
        assert changed[0, :, 64 * view : 64 * (view + 1)].sum() >= 10, f"view {view}"
    # Two cameras, not one frame twice.
    assert not torch.equal(frames[0][0, :, :64], frames[0][0, :, 64:])


def test_views_accept_names_mappings_and_reject_bad_ones():
    views = resolve_views(["goal", {"eye": [0.5, 0, 0.4], "target": [0, 0, 0.1], "fov": 0.8}])
    assert views[0] == VIEWS["goal"] and views[1].fov == 0.8
    with pytest.raises(ValueError, match="Unknown view 'top'"):
        resolve_views(["top"])
    with pytest.raises(ValueError, match="lacks 'fov'"):
        resolve_views([{"eye": [0, 0, 1], "target": [0, 0, 0]}])
    with pytest.raises(ValueError, match="non-empty list"):
        resolve_views([])


def test_truncates_at_max_episode_steps(pixel_env):
    td = pixel_env.rollout(10, break_when_any_done=False)
    assert td["next", "truncated"][0, -1].item()
    assert not td["next", "truncated"][0, :-1].any()


def test_render_frames_done_renders_only_final_frames(pixel_env):
    env = ManiSkillEnv(
        "PickCube-v1", pixels=True, render_frames="done", image_size=64, max_episode_steps=4
    )
    try:
        for e in (env, pixel_env):
            e.set_seed(3)
        torch.manual_seed(0)
        sparse = env.rollout(4, break_when_any_done=False)
        torch.manual_seed(0)
        dense = pixel_env.rollout(4, break_when_any_done=False)
    finally:
        env.close()
    frames = sparse["next", "pixels"][0]
    assert not frames[:3].any()  # not rendered
    # The final frame is the frame an every-frame env renders in the same state.
    torch.testing.assert_close(frames[3], dense["next", "pixels"][0, 3])


def test_render_window_renders_the_last_steps_of_each_episode():
    env = ManiSkillEnv(
        "PickCube-v1",
        pixels=True,
        render_frames="done",
        render_window=3,
        image_size=32,
        max_episode_steps=5,
        ignore_terminations=True,
    )
    try:
        td = env.rollout(10, break_when_any_done=False)
    finally:
        env.close()
    rendered = td["next", "rendered"].reshape(-1)
    assert rendered.tolist() == [False, False, True, True, True] * 2
    # Exactly the marked frames are real; the others are black.
    lit = td["next", "pixels"].reshape(10, -1).amax(-1) > 0
    assert torch.equal(lit, rendered)


def test_render_window_needs_at_least_one_step():
    with pytest.raises(ValueError, match="render_window"):
        ManiSkillEnv("PickCube-v1", pixels=True, render_frames="done", render_window=0)


def test_render_max_joint_speed_renders_only_static_frames(pixel_env):
    env = ManiSkillEnv(
        "PickCube-v1", pixels=True, render_max_joint_speed=0.4, image_size=64, max_episode_steps=10
    )
    # Still, then a hard push on every joint, then still again: the arm speeds up and settles.
    actions = torch.zeros(10, *env.action_spec.shape)
    actions[2:5] = 1.0
    try:
        rollouts = []
        for e in (env, pixel_env):
            e.set_seed(3)
            td = e.reset()
            steps = []
            for action in actions:
                td = e.step(td.set("action", action))
                steps.append(td["next"].clone())
                td = td["next"]
            rollouts.append(torch.stack(steps))
    finally:
        env.close()
    gated, every = rollouts
    arm_speed = gated["qvel"][..., :-2].abs().amax(-1)  # ManiSkill's agent.is_static
    rendered = gated["rendered"].reshape(-1)
    assert torch.equal(rendered, arm_speed.reshape(-1) <= 0.4)
    assert rendered.any() and not rendered.all()
    # Exactly the marked frames are real, each the frame an every-frame env renders there.
    lit = gated["pixels"].reshape(10, -1).amax(-1) > 0
    assert torch.equal(lit, rendered)
    torch.testing.assert_close(gated["pixels"][rendered], every["pixels"][rendered])
    with pytest.raises(ValueError, match="render_max_joint_speed"):
        ManiSkillEnv("PickCube-v1", pixels=True, render_max_joint_speed=0.0)


def test_reward_window_pays_only_the_last_steps_of_each_episode():
    env = ManiSkillEnv(
        "PickCube-v1", reward_window=2, max_episode_steps=5, ignore_terminations=True
    )
    try:
        td = env.rollout(10, break_when_any_done=False)
    finally:
        env.close()
    # The dense reward is positive at every step: only the window's steps keep it.
    paid = td["next", "reward"].reshape(-1) > 0
    assert paid.tolist() == [False, False, False, True, True] * 2
    with pytest.raises(ValueError, match="reward_window"):
        ManiSkillEnv("PickCube-v1", reward_window=0)


def test_seeding_is_reproducible():
    def rollout():
        env = ManiSkillEnv("PickCube-v1", max_episode_steps=10)
        env.set_seed(7)
        torch.manual_seed(0)
        td = env.rollout(5)
        env.close()
        return td["next", "observation"]

    torch.testing.assert_close(rollout(), rollout())


def test_seed_fixes_every_episode_whatever_else_draws_from_torch():
    # PickCube draws its cube and goal with torch.rand: an unseeded reset must not read the
    # global RNG the policy and PPO also draw from (evaluations were not a fixed episode set).
    def first_states(draws: int) -> torch.Tensor:
        env = ManiSkillEnv("PickCube-v1", max_episode_steps=10)
        env.set_seed(7)
        states = []
        for _ in range(3):
            states.append(env.reset()["observation"])
            torch.rand(draws)
        env.close()
        return torch.stack(states)

    states = first_states(draws=1)
    torch.testing.assert_close(states, first_states(draws=1000))
    assert not torch.equal(states[0], states[1]) and not torch.equal(states[1], states[2])


def test_partial_reset_resets_only_masked_envs():
    env = ParallelEnv(2, partial(ManiSkillEnv, "PickCube-v1", max_episode_steps=10))
    try:
        env.set_seed(0)
        td = env.reset()
        for _ in range(3):
            td = env.step(td.set("action", env.action_spec.rand()))["next"]
        stepped = td["observation"].clone()
        mask = torch.tensor([[True], [False]]).reshape(*env.batch_size, 1)
        out = env.reset(td.set("_reset", mask))
        torch.testing.assert_close(out["observation"][1], stepped[1])
        assert not torch.equal(out["observation"][0], stepped[0])
    finally:
        env.close()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(env_id="PickCub-v1"), ValueError, "Unknown ManiSkill env id 'PickCub-v1'"),
        (dict(image_size=4), ValueError, "image_size must be in"),
        (dict(image_size=100_000), ValueError, "image_size must be in"),
        (dict(num_envs=4, sim_backend="cpu"), ValueError, "one env per process"),
        (dict(render_frames="some"), ValueError, "render_frames must be one of"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        ManiSkillEnv(**kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_gpu_sim_without_gpu_says_so():
    with pytest.raises(RuntimeError, match="sim_backend='gpu' needs a CUDA device"):
        ManiSkillEnv(sim_backend="gpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (GPU physx)")
def test_gpu_sim_batches_envs_and_resets_partially():
    env = ManiSkillEnv(
        "PickCube-v1",
        pixels=True,
        num_envs=4,
        image_size=64,
        max_episode_steps=10,
        sim_backend="gpu",
    )
    try:
        assert env.batch_size == torch.Size([4])
        check_env_specs(env, seed=0)
        td = env.reset()
        for _ in range(3):
            td = env.step(td.set("action", env.action_spec.rand()))["next"]
        assert td["pixels"].shape == (4, 64, 64, 3)
        assert td["pixels"].dtype == torch.uint8
        stepped = td["observation"].clone()
        mask = torch.tensor([True, False, False, False], device=env.device).reshape(4, 1)
        out = env.reset(td.set("_reset", mask))
        torch.testing.assert_close(out["observation"][1:], stepped[1:])
        assert not torch.equal(out["observation"][0], stepped[0])
    finally:
        env.close()


@pytest.mark.parametrize(
    ("has_cuda", "num_envs", "expected"),
    [(False, 1, ("cpu", "cpu")), (True, 1, ("cpu", "gpu")), (True, 8, ("gpu", "gpu"))],
)
def test_auto_backends_follow_maniskill_defaults(monkeypatch, has_cuda, num_envs, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: has_cuda)
    assert _resolve_backends("auto", "auto", num_envs) == expected
