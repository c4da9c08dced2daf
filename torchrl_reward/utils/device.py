"""Which device to run on, decided in one place."""

from __future__ import annotations

import warnings

import torch


def resolve_device(
    device: str | torch.device | int | None, *, strict: bool = False, owner: str = "reward"
) -> torch.device:
    """The device work can really run on: the one policy of the package.

    ``None`` or ``"auto"`` means the first GPU when there is one, else the CPU. A GPU index
    beyond the visible GPUs falls back to ``cuda:0``, and any GPU without CUDA to the CPU, each
    with a warning, unless ``strict=True``, which raises instead: the reward model falls back
    by default (so a two-GPU plan still runs on one GPU), while training asks strictly (a
    ``device=cuda`` run on a CPU machine is a mistake to report, not to hide).
    """
    if device is None or device == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"{owner}: invalid device {device!r}: {err}") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ValueError(f"{owner}: device must be 'cpu' or 'cuda[:i]', got {str(device)!r}.")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = 0 if device.index is None else device.index
    if index < count:
        return torch.device("cuda", index)
    fallback = torch.device("cuda:0") if count else torch.device("cpu")
    seen = f"{count} GPU{'s' if count != 1 else ''}"
    if strict:
        raise RuntimeError(
            f"{owner}: device {str(device)!r} is not available ({seen} visible"
            + ("; no CUDA GPU" if not count else "")
            + f") and strict=True; pick an available device (cpu, auto) or fall back to "
            f"{fallback} with strict=False."
        )
    warnings.warn(
        f"{owner}: device {str(device)!r} is not available ({seen} visible); using "
        f"{fallback} instead (strict=True makes this an error).",
        stacklevel=3,
    )
    return fallback
