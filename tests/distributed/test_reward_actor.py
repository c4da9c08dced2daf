"""The reward model actor: chunked scoring, RewardTransform semantics, a new checkpoint without a
restart, a clear error at death."""

import pytest
import ray
import torch
from omegaconf import OmegaConf
from tensordict import TensorDict

from torchrl_reward.distributed import RemoteRewardTransform, ray_session, start_reward_actor
from torchrl_reward.models import ResNetRewardModel
from torchrl_reward.transforms import RewardTransform

pytestmark = [pytest.mark.slow, pytest.mark.ray]

RUNNER = OmegaConf.create(
    {
        "name": "ray",
        "address": None,
        "namespace": "torchrl_reward_test",
        "num_cpus": 2,
        "object_store_mb": 100,
        "reward_actor": {
            "name": "reward_model",
            "num_gpus": "auto",
            "num_cpus": 1,
            "timeout_s": 60,
        },
    }
)


def _batch(n: int) -> TensorDict:
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (n, 1, 32, 32, 3), dtype=torch.uint8, generator=generator)
    done = torch.zeros(n, 1, 1, dtype=torch.bool)
    done[::5] = True
    nxt = {"pixels": pixels, "reward": torch.rand(n, 1, 1, generator=generator), "done": done}
    return TensorDict({"next": nxt}, batch_size=[n, 1])


@pytest.mark.parametrize("terminal_only", [False, True])
def test_remote_rewards_equal_local_ones_in_chunks(tmp_path, terminal_only):
    path = ResNetRewardModel(image_size=32).save(tmp_path / "reward.pt")
    kwargs = {"mode": "add", "terminal_only": terminal_only, "chunk_size": 16, "device": "cpu"}
    local = RewardTransform(path, **kwargs)(_batch(40))
    with ray_session(RUNNER):
        actor = start_reward_actor(RUNNER.reward_actor, path, chunk_size=16, backend="torch")
        transform = RemoteRewardTransform(actor, path, **kwargs)
        remote = transform(_batch(40))
        frames = 8 if terminal_only else 40  # only the scored frames travel
        stats = transform.actor_stats()
        assert stats["frames"] == frames and stats["chunks"] == -(-frames // 16)
        assert stats["largest_chunk"] == min(frames, 16)
        for key in ("reward", "env_reward", "model_success_prob"):
            torch.testing.assert_close(remote["next", key], local["next", key], msg=key)
        # A new checkpoint reaches the running actor: no restart, the same actor scores it.
        retrained = ResNetRewardModel(image_size=32).save(tmp_path / "retrained.pt")
        transform.load_checkpoint(retrained)
        assert ray.get(actor.info.remote())["checkpoint"] == str(retrained)
        relabelled = transform(_batch(40))["next", "model_success_prob"]
        expected = RewardTransform(retrained, **kwargs)(_batch(40))["next", "model_success_prob"]
        torch.testing.assert_close(relabelled, expected)
        assert not torch.equal(relabelled, remote["next", "model_success_prob"])
        ray.kill(actor)
        with pytest.raises(RuntimeError, match="reward model actor 'reward_model' died"):
            transform(_batch(4))
    assert not ray.is_initialized()
