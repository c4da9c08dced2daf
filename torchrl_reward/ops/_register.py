"""Loads the compiled ops (``torchrl_reward._C``) and registers their fake kernels.

Importing ``torchrl_reward._C`` runs the ``TORCH_LIBRARY`` registrations of ``csrc/ops``, which
make ``torch.ops.torchrl_reward.preprocess`` a dispatcher op (CPU kernel always, CUDA kernel in a
CUDA build). The fake kernel gives ``torch.compile`` and ``torch.export`` the output's shape and
dtype without running it. When the extension is missing, :mod:`torchrl_reward.ops` falls back to
pure torch and says so in one log line.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from torchrl_reward.ops._checks import check_preprocess_args

logger = logging.getLogger(__name__)

try:
    from torchrl_reward import _C
except ImportError as err:  # not built, or built against another torch
    _C = None
    logger.warning(
        "torchrl_reward._C is not available (%s); torchrl_reward.ops.preprocess uses its "
        "pure-torch fallback. Build the extension with `pip install --no-build-isolation -e .`",
        err,
    )


def has_ops() -> bool:
    """Whether the compiled ops of ``torchrl_reward._C`` are loaded."""
    return _C is not None


# Whether this build has the CUDA kernel (a CPU-only build still loads on a CUDA machine).
HAS_CUDA_KERNEL = (
    _C is not None
    and torch.ops.torchrl_reward.preprocess.default.has_kernel_for_dispatch_key(
        torch.DispatchKey.CUDA
    )
)

if _C is not None:

    @torch.library.register_fake("torchrl_reward::preprocess")
    def _preprocess_fake(
        images: torch.Tensor,
        mean: Sequence[float],
        std: Sequence[float],
        size: Sequence[int] | None,
        dtype: torch.dtype,
        channels_last: bool = False,
    ) -> torch.Tensor:
        out_h, out_w = check_preprocess_args(images, mean, std, size, dtype)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        return torch.empty(
            (images.shape[0], 3, out_h, out_w),
            dtype=dtype,
            device=images.device,
            memory_format=memory_format,
        )
