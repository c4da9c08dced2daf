"""``ray_session``'s cluster settings: a laptop's local cluster or a running one."""

import os

import pytest

from torchrl_reward.distributed.cluster import local_cpus, ray_init_kwargs
from torchrl_reward.hydra_configs import load_config
from torchrl_reward.ppo.config import make_ppo_config


def _runner(*overrides: str):
    return make_ppo_config(load_config("ppo", ["runner=ray", *overrides])).runner


def test_a_local_cluster_offers_at_least_what_the_actors_reserve():
    runner = _runner("runner.num_collectors=8", "runner.collector_cpus=0.5")
    assert local_cpus(runner) == max(os.cpu_count(), 5)  # 8 x 0.5 + the reward actor's 1
    assert local_cpus(_runner("runner.num_cpus=3")) == 3  # set: taken as is


def test_local_cluster_is_bound_to_loopback_and_joining_takes_only_the_address():
    local = ray_init_kwargs(_runner("runner.object_store_mb=200"))
    assert local["_node_ip_address"] == "127.0.0.1" and not local["include_dashboard"]
    assert local["object_store_memory"] == 200 << 20 and local["address"] == "local"
    joined = ray_init_kwargs(_runner("runner.address=auto"))
    assert joined == {"address": "auto", "namespace": "torchrl_reward", "log_to_driver": True}
    with pytest.raises(ValueError, match="at least 80 MiB"):
        ray_init_kwargs(_runner("runner.object_store_mb=10"))
