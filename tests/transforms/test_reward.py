"""RewardTransform: shapes and chunking, modes and outputs, specs, devices, errors."""

import copy

import pytest
import torch
import torchvision
from tensordict import TensorDict
from torchrl.data import Bounded, Composite, Unbounded
from torchrl.envs import TransformedEnv
from torchrl.envs.utils import check_env_specs

from torchrl_reward.envs import ManiSkillEnv
from torchrl_reward.models import ResNetRewardModel
from torchrl_reward.transforms import RewardTransform

SIZE = 32  # the fixture model's image size
needs_no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU fallback")
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def make_frames(*batch: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (*batch, SIZE, SIZE, 3), dtype=torch.uint8, generator=generator)


def _rollout(frames: torch.Tensor, env_reward: torch.Tensor | None = None) -> TensorDict:
    """A collected batch [*B] with post-step frames and env reward under "next"."""
    batch = frames.shape[:-3]
    if env_reward is None:
        env_reward = torch.linspace(0, 1, batch.numel()).reshape(*batch, 1)
    done = torch.zeros(*batch, 1, dtype=torch.bool)
    done[..., -1, :] = True  # the last step of each trajectory
    return TensorDict(
        {"pixels": frames, "next": {"pixels": frames, "reward": env_reward, "done": done}},
        batch_size=batch,
    )


def test_600_frames_make_3_chunks_with_the_same_rewards(model):
    frames = make_frames(600)
    chunked = RewardTransform(model=model, device="cpu", chunk_size=256)
    whole = RewardTransform(model=model, device="cpu", chunk_size=600)
    probs = chunked.success_prob(frames)
    assert chunked.stats["chunks"] == 3 and chunked.stats["frames"] == 600
    torch.testing.assert_close(probs, whole.success_prob(frames), atol=1e-5, rtol=0)
    assert whole.stats["chunks"] == 1
    torch.testing.assert_close(probs, model.predict_proba(frames), atol=1e-5, rtol=0)


def test_any_batch_shape_and_both_layouts(model):
    frames = make_frames(3, 4, 5)
    t = RewardTransform(model=model, device="cpu", chunk_size=7)
    probs = t.success_prob(frames)
    assert probs.shape == (3, 4, 5) and probs.dtype == torch.float32
    torch.testing.assert_close(t.success_prob(frames.movedim(-1, -3)), probs)
    torch.testing.assert_close(
        probs.reshape(-1), model.predict_proba(frames.reshape(-1, SIZE, SIZE, 3)), atol=1e-5, rtol=0
    )


def test_replace_soft_writes_prob_and_keeps_env_reward(model):
    frames = make_frames(4, 6)
    data = _rollout(frames)
    env_reward = data["next", "reward"].clone()
    out = RewardTransform(model=model, device="cpu")(data)
    probs = model.predict_proba(frames).unsqueeze(-1)
    torch.testing.assert_close(out["next", "model_success_prob"], probs, atol=1e-5, rtol=0)
    torch.testing.assert_close(out["next", "reward"], probs, atol=1e-5, rtol=0)
    assert torch.equal(out["next", "env_reward"], env_reward)
    assert out.get("reward", None) is None  # the pre-action entries are untouched


def test_add_binary_and_relabelling_twice(model):
    frames = make_frames(4, 6)
    data = _rollout(frames)
    env_reward = data["next", "reward"].clone()
    t = RewardTransform(
        model=model, device="cpu", mode="add", output="binary", env_weight=0.5, model_weight=2.0
    )
    out = t(data)
    success = (model.predict_proba(frames) >= model.threshold).float().unsqueeze(-1)
    assert 0 < success.sum() < success.numel()  # the threshold splits these frames
    torch.testing.assert_close(out["next", "reward"], 0.5 * env_reward + 2.0 * success)
    again = t(out)  # relabels from env_reward, not from the already-mixed reward
    torch.testing.assert_close(again["next", "reward"], 0.5 * env_reward + 2.0 * success)


def test_explicit_threshold_overrides_the_checkpoint(model):
    frames = make_frames(8)
    t = RewardTransform(model=model, device="cpu", output="binary", threshold=0.0)
    assert t.threshold == 0.0
    data = TensorDict({"pixels": frames, "reward": torch.zeros(8, 1)}, [8])
    assert torch.equal(t(data)["reward"], torch.ones(8, 1))


def test_terminal_only_scores_final_frames(model):
    frames = make_frames(3, 5)
    data = _rollout(frames)
    t = RewardTransform(model=model, device="cpu", terminal_only=True)
    out = t(data)
    assert t.stats["frames"] == 3  # one final frame per trajectory
    probs = model.predict_proba(frames[:, -1])
    torch.testing.assert_close(out["next", "reward"][:, -1, 0], probs, atol=1e-5, rtol=0)
    assert (out["next", "reward"][:, :-1] == 0).all()
    assert (out["next", "model_success_prob"][:, :-1] == 0).all()


def test_score_key_scores_only_marked_frames(model):
    frames = make_frames(3, 5)
    data = _rollout(frames)
    scored = torch.zeros(3, 5, 1, dtype=torch.bool)
    scored[:, -2:] = True  # e.g. ManiSkillEnv(render_window=2)'s "rendered"
    data["next", "rendered"] = scored
    t = RewardTransform(model=model, device="cpu", terminal_only=True, score_key="rendered")
    out = t(data)
    assert t.stats["frames"] == 6
    probs = model.predict_proba(frames[:, -2:].reshape(-1, *frames.shape[-3:])).reshape(3, 2)
    torch.testing.assert_close(out["next", "reward"][:, -2:, 0], probs, atol=1e-5, rtol=0)
    assert (out["next", "reward"][:, :-2] == 0).all()
    torch.testing.assert_close(t.scored_frames(out["next"]), scored)


def test_missing_score_key_is_a_clear_error(model):
    t = RewardTransform(model=model, device="cpu", score_key="rendered")
    with pytest.raises(KeyError, match="rendered"):
        t(_rollout(make_frames(2, 3)))


def test_flat_batch_without_next_and_without_env_reward(model):
    frames = make_frames(5)
    out = RewardTransform(model=model, device="cpu")(TensorDict({"pixels": frames}, [5]))
    assert out["reward"].shape == (5, 1) and out.get("env_reward", None) is None


def test_empty_batch_gives_empty_rewards(model):
    t = RewardTransform(model=model, device="cpu")
    out = t(_rollout(make_frames(0, 4), env_reward=torch.zeros(0, 4, 1)))
    assert out["next", "reward"].shape == (0, 4, 1)
    assert t.success_prob(make_frames(0)).shape == (0,) and t.stats["chunks"] == 0


def test_reward_spec(model):
    def spec(leaf):
        return Composite(reward=leaf, shape=(2,))

    replace = RewardTransform(model=model, device="cpu").transform_reward_spec(
        spec(Unbounded(shape=(2, 1)))
    )["reward"]
    assert isinstance(replace, Bounded) and replace.shape == (2, 1)
    assert replace.space.low.min() == 0 and replace.space.high.max() == 1
    add = RewardTransform(model=model, device="cpu", mode="add", env_weight=-2.0, model_weight=0.5)
    bounded = add.transform_reward_spec(spec(Bounded(0.0, 1.0, shape=(2, 1))))["reward"]
    assert isinstance(bounded, Bounded)
    assert bounded.space.low.min() == -2.0 and bounded.space.high.max() == 0.5
    unbounded = add.transform_reward_spec(spec(Unbounded(shape=(2, 1))))["reward"]
    assert isinstance(unbounded, Unbounded)


def test_checkpoint_round_trip(model, checkpoint, tmp_path):
    frames = make_frames(6)
    t = RewardTransform(checkpoint, device="cpu")
    assert t.threshold == pytest.approx(model.threshold)
    saved = t.save_checkpoint(tmp_path / "copy.pt", note="relabel")
    again = RewardTransform(saved, device="cpu")
    assert again.model.checkpoint_metadata["note"] == "relabel"
    torch.testing.assert_close(again.success_prob(frames), t.success_prob(frames))


@needs_no_gpu
def test_cuda_1_falls_back_to_cpu_with_a_warning(model):
    with pytest.warns(UserWarning, match="RewardTransform: device 'cuda:1' is not available"):
        t = RewardTransform(model=model, device="cuda:1")
    assert t.reward_device == torch.device("cpu")
    with pytest.raises(RuntimeError, match="strict=True"):
        RewardTransform(model=model, device="cuda:1", strict=True)


def test_model_stays_put_when_the_transform_moves(model):
    t = RewardTransform(model=model, device="cpu")
    assert list(t.parameters()) == [] and t.to(torch.float64).reward_device.type == "cpu"
    assert t.set_reward_device("cpu").reward_device == torch.device("cpu")


@pytest.mark.parametrize(
    ("images", "error", "match"),
    [
        (torch.rand(2, SIZE, SIZE, 3), TypeError, "must be uint8"),
        (torch.zeros(2, SIZE, SIZE, 4, dtype=torch.uint8), ValueError, r"\[\.\.\., H, W, 3\]"),
        (torch.zeros(2, 48, 48, 3, dtype=torch.uint8), ValueError, "image_size=32"),
    ],
)
def test_bad_frames(model, images, error, match):
    with pytest.raises(error, match=match):
        RewardTransform(model=model, device="cpu")(TensorDict({"pixels": images}, [2]))


def test_missing_image_key_says_how_to_enable_pixels(model):
    data = TensorDict({"observation": torch.zeros(2, 42)}, [2])
    with pytest.raises(KeyError, match=r"ManiSkillEnv\(\.\.\., pixels=True\)"):
        RewardTransform(model=model, device="cpu")(data)


def test_nan_from_the_backend_is_an_error(model):
    broken = copy.deepcopy(model)
    with torch.no_grad():
        broken.head[-1].bias.fill_(float("nan"))
    with pytest.raises(RuntimeError, match="NaN/inf probabilities"):
        RewardTransform(model=broken, device="cpu").success_prob(make_frames(3))


def test_checkpoint_errors(model, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        RewardTransform(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="unreadable"):
        RewardTransform(corrupt)
    torchvision_weights = tmp_path / "resnet18.pt"
    torch.save(torchvision.models.resnet18().state_dict(), torchvision_weights)
    with pytest.raises(ValueError, match="not a ResNetRewardModel checkpoint"):
        RewardTransform(torchvision_weights)
    other_arch = model.checkpoint()
    other_arch["config"] = {**other_arch["config"], "arch": "resnet34"}
    path = tmp_path / "other_arch.pt"
    torch.save(other_arch, path)
    with pytest.raises(ValueError, match="do not fit resnet34"):
        RewardTransform(path)


def test_bad_arguments(model, checkpoint):
    with pytest.raises(ValueError, match="exactly one of checkpoint_path or model"):
        RewardTransform(checkpoint, model=model)
    with pytest.raises(TypeError, match="must be a ResNetRewardModel"):
        RewardTransform(model=torch.nn.Linear(1, 1))
    for kwargs, match in [
        ({"mode": "multiply"}, "mode must be one of"),
        ({"output": "logit"}, "output must be one of"),
        ({"threshold": 1.5}, "threshold must be in"),
        ({"chunk_size": 0}, "chunk_size must be >= 1"),
        ({"in_keys": ["a", "b"]}, "one image key"),
    ]:
        with pytest.raises(ValueError, match=match):
            RewardTransform(model=model, device="cpu", **kwargs)
    with pytest.raises(KeyError, match="needs the env reward 'reward'"):
        RewardTransform(model=model, mode="add", device="cpu")(
            TensorDict({"pixels": make_frames(2)}, [2])
        )


@pytest.mark.slow
def test_in_a_maniskill_env(model):
    base = ManiSkillEnv("PickCube-v1", pixels=True, image_size=SIZE, max_episode_steps=4)
    env = TransformedEnv(base, RewardTransform(model=model, device="cpu", mode="add"))
    reward_spec = env.full_reward_spec["reward"]
    assert isinstance(reward_spec, Unbounded) and reward_spec.shape == (1, 1)
    assert {"env_reward", "model_success_prob"} <= set(env.full_observation_spec.keys())
    check_env_specs(env)
    rollout = env.rollout(3, break_when_any_done=False)
    probs = model.predict_proba(rollout["next", "pixels"]).unsqueeze(-1)
    torch.testing.assert_close(rollout["next", "model_success_prob"], probs, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        rollout["next", "reward"], rollout["next", "env_reward"] + probs, atol=1e-5, rtol=0
    )
    env.close()
    with pytest.raises(KeyError, match=r"ManiSkillEnv\(\.\.\., pixels=True\)"):
        env = TransformedEnv(
            ManiSkillEnv("PickCube-v1", max_episode_steps=4),
            RewardTransform(model=model, device="cpu"),
        )
        env.check_env_specs()


def test_proprio_inputs_come_from_their_key_and_are_checked():
    torch.manual_seed(0)
    model = ResNetRewardModel(image_size=SIZE, proprio={"qvel": 9}).eval()
    transform = RewardTransform(model=model, device="cpu", chunk_size=4)
    frames, qvel = make_frames(2, 5), torch.randn(2, 5, 9)
    batch = _rollout(frames)
    batch["next", "qvel"] = qvel
    out = transform(batch.clone())
    expected = model.predict_proba(frames, qvel).unsqueeze(-1)
    torch.testing.assert_close(out["next", "reward"], expected, atol=1e-5, rtol=0)
    terminal = RewardTransform(model=model, device="cpu", terminal_only=True)
    last = terminal(batch.clone())["next", "reward"][:, -1]
    torch.testing.assert_close(last, expected[:, -1], atol=1e-5, rtol=0)
    with pytest.raises(KeyError, match=r"lacks \['qvel'\]"):
        transform(_rollout(frames))
    batch["next", "qvel"] = qvel[..., :8]
    with pytest.raises(ValueError, match=r"'qvel' must be float \[\*B, 9\]"):
        transform(batch.clone())
    batch["next", "qvel"] = torch.full_like(qvel, float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        transform(batch.clone())


def test_frames_with_another_view_count_are_refused(model):
    two_views = ResNetRewardModel(image_size=SIZE, num_views=2).eval()
    transform = RewardTransform(model=two_views, device="cpu")
    assert transform.success_prob(torch.cat([make_frames(3)] * 2, dim=2)).shape == (3,)
    with pytest.raises(ValueError, match=r"checkpoint scores 32x64 \(2 views of 32x32"):
        transform.success_prob(make_frames(3))


def _by_hand(backend, frames, chunk=256):
    """The plain path: the backend on each chunk of the flat frames."""
    flat = frames.reshape(-1, SIZE, SIZE, 3)
    return torch.cat([backend(c.contiguous()) for c in flat.split(chunk)])


@pytest.mark.parametrize("n", [255, 256, 257, 513])
def test_chunk_boundaries_give_the_plain_path_rewards_bitwise(model, n):
    frames = make_frames(n)
    t = RewardTransform(model=model, device="cpu", chunk_size=256, output="binary", mode="add")
    data = _rollout(frames.unsqueeze(0))  # one trajectory of n steps
    env_reward = data["next", "reward"].clone()
    out = t(data)
    probs = _by_hand(t.backend, frames).reshape(1, n, 1)
    assert torch.equal(out["next", "model_success_prob"], probs)
    assert torch.equal(out["next", "reward"], env_reward + (probs >= t.threshold).float())
    assert t.stats["chunks"] == -(-n // 256) and out["next", "reward"].device.type == "cpu"


def test_terminal_only_and_proprio_across_chunk_boundaries():
    torch.manual_seed(0)
    model = ResNetRewardModel(image_size=SIZE, proprio={"qvel": 9}).eval()
    t = RewardTransform(model=model, device="cpu", chunk_size=4, terminal_only=True)
    frames, qvel = make_frames(3, 5), torch.randn(3, 5, 9)
    data = _rollout(frames)
    data["next", "done"][:, 1] = True  # 6 of 15 frames scored: two chunks of the picked frames
    data["next", "qvel"] = qvel
    out = t(data)
    done = data["next", "done"].squeeze(-1)
    picked = frames[done]
    by_hand = torch.cat(
        [t.backend(f, q) for f, q in zip(picked.split(4), qvel[done].split(4), strict=True)]
    )
    assert torch.equal(out["next", "model_success_prob"][done].squeeze(-1), by_hand)
    assert (out["next", "reward"][~done] == 0).all() and t.stats["chunks"] == 2


GPU_FAST = {"amp_dtype": "float16", "cuda_graph": True}


@needs_gpu
@pytest.mark.parametrize("pinned", [False, True])
@pytest.mark.parametrize("n", [255, 257, 513])
def test_cpu_rollout_on_a_gpu_reward_model(model, pinned, n):
    frames = make_frames(n)
    data = _rollout(frames.unsqueeze(0))
    if pinned:
        data = data.pin_memory()
        assert data["next", "pixels"].is_pinned()
    gpu = RewardTransform(model=model, device="cuda", backend="torch", backend_kwargs=GPU_FAST)
    cpu = RewardTransform(model=model, device="cpu")
    out = gpu(data.clone(False))  # shallow: the frames stay pinned
    want = cpu(data.clone(False))
    for key in ("reward", "model_success_prob", "env_reward"):
        assert out["next", key].device.type == "cpu"
        torch.testing.assert_close(out["next", key], want["next", key], atol=1e-2, rtol=0)
    on_gpu = gpu(data.clone().to("cuda"))  # frames already on the GPU: rewards stay there
    assert on_gpu["next", "reward"].device.type == "cuda"
    torch.testing.assert_close(on_gpu["next", "reward"].cpu(), out["next", "reward"])


@needs_gpu
def test_terminal_only_and_proprio_on_a_gpu_reward_model():
    torch.manual_seed(0)
    model = ResNetRewardModel(image_size=SIZE, proprio={"qvel": 9}).eval()
    data = _rollout(make_frames(3, 100))
    data["next", "qvel"] = torch.randn(3, 100, 9)
    data["next", "done"][:, ::7] = True
    for kwargs in ({}, {"terminal_only": True}):
        gpu = RewardTransform(model=model, device="cuda", backend_kwargs=GPU_FAST, **kwargs)
        cpu = RewardTransform(model=model, device="cpu", **kwargs)
        for source in (data, data.to("cuda")):
            got = gpu(source.clone())["next", "reward"]
            assert got.device == source["next", "pixels"].device
            want = cpu(data.clone())["next", "reward"]
            torch.testing.assert_close(got.cpu(), want, atol=1e-2, rtol=0)
    broken = data.to("cuda")
    broken["next", "qvel"][1, 3, 0] = float("nan")  # checked in the wait for the rewards
    with pytest.raises(ValueError, match="NaN"):
        gpu(broken)
    assert "model_success_prob" not in broken["next"]


def test_a_checkpoint_replaced_on_disk_is_scored_from_the_next_call(
    tmp_path, constant_reward_model
):
    path = constant_reward_model(-1.0, image_size=SIZE, threshold=0.3).save(tmp_path / "r.pt")
    watching = RewardTransform(path, device="cpu", reload_on_change=True)
    fixed = RewardTransform(path, device="cpu")
    batch = _rollout(make_frames(4))
    first = watching(batch.clone())["next", "model_success_prob"]
    torch.testing.assert_close(first, torch.full_like(first, torch.sigmoid(torch.tensor(-1.0))))
    # Written beside the old file and renamed over it, as every checkpoint here is.
    constant_reward_model(2.0, image_size=SIZE, threshold=0.6).save(path)
    second = watching(batch.clone())["next", "model_success_prob"]
    torch.testing.assert_close(second, torch.full_like(second, torch.sigmoid(torch.tensor(2.0))))
    assert watching.threshold == pytest.approx(0.6) and watching.stats["reloads"] == 1
    torch.testing.assert_close(fixed(batch.clone())["next", "model_success_prob"], first)
    watching(batch.clone())
    assert watching.stats["reloads"] == 1  # the same file is not loaded again


def test_loading_a_checkpoint_keeps_a_given_threshold_and_refuses_other_inputs(
    tmp_path, constant_reward_model
):
    def make(logit, threshold, **kwargs):
        return constant_reward_model(logit, image_size=SIZE, threshold=threshold, **kwargs)

    t = RewardTransform(model=make(0.0, 0.3), threshold=0.9, device="cpu")
    t.load_checkpoint(make(1.0, 0.6).save(tmp_path / "new.pt"))
    assert t.threshold == pytest.approx(0.9)
    other = make(0.0, 0.5, proprio={"qvel": 9}).save(tmp_path / "proprio.pt")
    with pytest.raises(ValueError, match=r"proprio .*new transform"):
        t.load_checkpoint(other)
    with pytest.raises(ValueError, match="reload_on_change needs a checkpoint_path"):
        RewardTransform(model=make(0.0, 0.5), reload_on_change=True)
