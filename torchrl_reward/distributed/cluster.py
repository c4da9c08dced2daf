"""``ray_session``: the Ray cluster a ``runner=ray`` run works in, joined or started for it."""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterator
from typing import Any

import ray

log = logging.getLogger(__name__)
LOOPBACK = "127.0.0.1"
# Set for a cluster this process starts: no usage reports, no cluster on macOS/Windows hosts.
_LOCAL_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def ray_init_kwargs(runner_cfg: Any) -> dict[str, Any]:
    """``ray.init`` keyword arguments from the ``runner=ray`` config.

    ``runner.address`` is all that differs between a laptop and a cluster: ``null`` starts a
    small cluster bound to the loopback interface (no dashboard, an object store of
    ``runner.object_store_mb``, :func:`local_cpus` CPUs); ``auto`` or ``<head>:6379`` joins a
    running one, whose own ``ray start`` settings then hold.
    """
    kwargs: dict[str, Any] = {"namespace": runner_cfg.namespace, "log_to_driver": True}
    if runner_cfg.address:
        return {"address": runner_cfg.address, **kwargs}
    store_mb = int(runner_cfg.object_store_mb)
    if store_mb < 80:
        raise ValueError(
            f"runner.object_store_mb={store_mb}: Ray needs at least 80 MiB of object store."
        )
    return {
        **kwargs,
        "address": "local",
        "num_cpus": local_cpus(runner_cfg),
        "object_store_memory": store_mb << 20,
        "include_dashboard": False,
        "_node_ip_address": LOOPBACK,
    }


def local_cpus(runner_cfg: Any) -> int:
    """The CPUs a local cluster offers: ``runner.num_cpus``, or by default the machine's, raised
    to what the run's actors reserve (its collectors and the reward actor).

    Ray's CPUs are scheduling tokens: on a 2-core laptop two collectors and the reward actor
    share the cores instead of waiting forever for a CPU that never frees.
    """
    if runner_cfg.num_cpus is not None:
        return int(runner_cfg.num_cpus)
    reserved = (
        runner_cfg.num_collectors * runner_cfg.collector_cpus + runner_cfg.reward_actor.num_cpus
    )
    return max(os.cpu_count() or 1, math.ceil(reserved))


@contextlib.contextmanager
def ray_session(runner_cfg: Any) -> Iterator[None]:
    """Run the body in the configured Ray cluster (``runner.name == "ray"``), else as is.

    A cluster this call starts (or a connection it opens) is shut down on exit, errors
    included, so no Ray process outlives the run; one that was already initialised in this
    process is left alone.
    """
    if runner_cfg.name != "ray":
        yield
        return
    if ray.is_initialized():
        yield
        return
    kwargs = ray_init_kwargs(runner_cfg)
    if not runner_cfg.address:
        for key, value in _LOCAL_ENV.items():
            os.environ.setdefault(key, value)
    ray.init(**kwargs)
    log.info("Ray cluster: %s", ray.cluster_resources())
    try:
        yield
    finally:
        ray.shutdown()
