"""Reward inference, end to end (uint8 frames in, probabilities out), against the seed's pipeline,
and the path around the network inside ``RewardTransform``.

    pytest --benchmark-only -s tests/benchmarks/test_inference_benchmark.py
    pytest --benchmark-only -s tests/benchmarks/test_inference_benchmark.py -k "path or per_call"

All backends score the same 256-frame uint8 chunk at 128 px, rendered from PickCube-v1 (real
frames, not noise). The reference is the seed system's pipeline: torch ops
``permute/float/255/normalise`` and an eager float32 ResNet-18. Each backend reports its speed-up
over the reference measured in this run, its label agreement with the float32 reference on the
chunk (the int8 model is calibrated on other episodes), and the process's peak RSS.

The model: set ``TORCHRL_REWARD_BENCH_CHECKPOINT`` (a 128 px checkpoint) and
``TORCHRL_REWARD_BENCH_EPISODES`` (its recorded episodes) to measure a trained model. Without
them, a ResNet-18 stands in: batch norm re-estimated on the rendered frames and the head fitted to a
visible state property (gripper near the cube), with the threshold at the median probability:
half the frames on each side, the hardest case for label agreement. Its features are random,
so it is more sensitive to int8 noise than a trained network; the export's parity check on
the real checkpoint decides whether int8 is used.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import resource
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from tensordict import TensorDict

from torchrl_reward.envs import ManiSkillEnv
from torchrl_reward.inference import (
    FrameScorer,
    OnnxBackend,
    RewardBackend,
    TensorRTBackend,
    TorchBackend,
    export_reward,
    frames_from_episodes,
    tensorrt_unavailable_reason,
)
from torchrl_reward.models import ResNetRewardModel
from torchrl_reward.models.resnet import preprocess_frames
from torchrl_reward.transforms import RewardTransform

SIZE = 128
CHUNK = 256
CALIBRATION = 128
EPISODE_STEPS = 24
ROUNDS = 5
CHECKPOINT = os.environ.get("TORCHRL_REWARD_BENCH_CHECKPOINT")
EPISODES = os.environ.get("TORCHRL_REWARD_BENCH_EPISODES")


@dataclasses.dataclass
class Workload:
    model: ResNetRewardModel
    chunk: torch.Tensor  # uint8 [256, 128, 128, 3], the timed input and the agreement frames
    threshold: float
    reference_probs: torch.Tensor
    export_dir: Path
    rows: list
    proprio: torch.Tensor | None = None  # float [256, D] for a model with proprio inputs
    path_rows: list = dataclasses.field(default_factory=list)
    call_rows: list = dataclasses.field(default_factory=list)
    transforms: dict = dataclasses.field(default_factory=dict)


def reference_pipeline(
    model: ResNetRewardModel, images: torch.Tensor, proprio: torch.Tensor | None = None
) -> torch.Tensor:
    """The seed's inference: torch-op preprocessing and an eager float32 network (its proprio
    inputs, if any, beside)."""
    mean = torch.tensor(model.mean, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(model.std, device=images.device).view(1, 3, 1, 1)
    x = images.permute(0, 3, 1, 2).float() / 255.0
    x = (x - mean) / std
    return torch.sigmoid(model.backbone_forward(x, proprio))


def _render(frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``frames`` post-step frames and states of random-action PickCube episodes."""
    env = ManiSkillEnv("PickCube-v1", pixels=True, image_size=SIZE, max_episode_steps=EPISODE_STEPS)
    env.set_seed(0)
    torch.manual_seed(0)
    rollout = env.rollout(frames, break_when_any_done=False)
    env.close()
    return rollout["next", "pixels"][0], rollout["next", "observation"][0]


def _proxy_model(frames: torch.Tensor, states: torch.Tensor) -> ResNetRewardModel:
    """A ResNet-18 stand-in for a trained model, built in seconds from the rendered frames.

    Batch-norm statistics are re-estimated on the frames (so activations have a trained
    network's scale, which int8 calibration depends on), then the head is fitted, with weight
    decay, to "gripper near the cube" (PickCube's tcp-to-cube distance below its median).
    """
    torch.manual_seed(0)
    model = ResNetRewardModel(image_size=SIZE)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a cumulative average over all batches
    model.train()
    with torch.no_grad():
        for chunk in frames.split(32):
            model.backbone(model.preprocess(chunk))
    model.eval()
    distance = states[:, 36:39].norm(dim=-1)  # tcp_to_obj_pos in PickCube's state
    labels = (distance < distance.median()).float()
    with torch.no_grad():
        features = model.backbone(model.preprocess(frames))
    optimizer = torch.optim.AdamW(model.head.parameters(), lr=1e-3, weight_decay=0.1)
    for _ in range(60):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            model.head(features).squeeze(-1), labels
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def _median_gap(probs: torch.Tensor) -> float:
    """A threshold halfway between the two middle probabilities: half the frames each side."""
    ordered = probs.sort().values
    middle = ordered.shape[0] // 2
    return float(ordered[middle - 1 : middle + 1].mean())


@pytest.fixture(scope="module")
def workload(tmp_path_factory, pytestconfig) -> Workload:
    proprio = calibration_proprio = None
    if CHECKPOINT:
        model = ResNetRewardModel.load(CHECKPOINT)
        calibration, validation = frames_from_episodes(
            EPISODES, max_calibration=CALIBRATION, max_validation=CHUNK, proprio=list(model.proprio)
        )
        # Cycle the validation frames to a full chunk if there are fewer.
        cycle = torch.arange(CHUNK) % validation.shape[0]
        if model.proprio:
            proprio, calibration_proprio = validation["proprio"][cycle], calibration["proprio"]
        calibration, chunk = calibration["pixels"], validation["pixels"][cycle]
    else:
        frames, states = _render(CALIBRATION + CHUNK)
        # Whole episodes apart: calibration frames first, the timed chunk after.
        calibration, chunk = frames[:CALIBRATION], frames[CALIBRATION:]
        model = _proxy_model(calibration, states[:CALIBRATION])
    assert chunk.shape == (CHUNK, SIZE, SIZE, 3), "need 256 frames of 128 px"
    with torch.no_grad():
        reference_probs = reference_pipeline(model, chunk, proprio)
    threshold = model.threshold if CHECKPOINT else _median_gap(reference_probs)
    model.threshold = threshold
    export_dir = tmp_path_factory.mktemp("export")
    export_reward(
        model,
        export_dir,
        chunk,
        validation_proprio=proprio,
        calibration_frames=calibration,
        calibration_proprio=calibration_proprio,
        fp16=True,
    )
    work = Workload(model, chunk.contiguous(), threshold, reference_probs, export_dir, [], proprio)
    yield work
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        if work.rows:
            _print_backend_rows(work.rows)
        if work.path_rows:
            _print_path_rows(work.path_rows)
        if work.call_rows:
            _print_call_rows(work.call_rows)


def _print_backend_rows(rows: list) -> None:
    print(f"\n\nreward inference, {CHUNK} uint8 frames of {SIZE} px, best of {ROUNDS} rounds")
    print("(speed-up: best times of the reference and the backend timed alternately;")
    print(" GPU rows against the reference on the same GPU)")
    print(f"{'pipeline':22s} {'ms':>8s} {'frames/s':>9s} {'speed-up':>9s} {'agreement':>10s}")
    for name, ms, speedup, agree in rows:
        print(f"{name:22s} {ms:8.1f} {CHUNK / ms * 1e3:9.0f} {speedup:8.2f}x {agree:10.4f}")


def _cpu_reference(work: Workload) -> Callable[[], torch.Tensor]:
    return lambda: reference_pipeline(work.model, work.chunk, work.proprio)


def _cuda_reference(work: Workload) -> Callable[[], torch.Tensor]:
    """The seed's pipeline on the GPU: the fair baseline for a CUDA backend."""
    model = copy.deepcopy(work.model).cuda()
    chunk = work.chunk.cuda()
    proprio = _to(work.proprio, "cuda")

    def run() -> torch.Tensor:
        probs = reference_pipeline(model, chunk, proprio)
        torch.cuda.synchronize()
        return probs

    return run


def _to(proprio: torch.Tensor | None, device) -> torch.Tensor | None:
    return None if proprio is None else proprio.to(device)


def _interleaved_best(run, reference, rounds: int = 3) -> tuple[float, float]:
    """Best seconds of ``reference`` and of ``run``, timed alternately so load drifts cancel."""
    reference_s = candidate = float("inf")
    with torch.no_grad():
        reference()  # warm-up
        for _ in range(rounds):
            start = time.perf_counter()
            reference()
            reference_s = min(reference_s, time.perf_counter() - start)
            start = time.perf_counter()
            run()
            candidate = min(candidate, time.perf_counter() - start)
    return reference_s, candidate


def _report(
    benchmark, work: Workload, name: str, probs: torch.Tensor, run=None, reference=None
) -> None:
    best = benchmark.stats.stats.min
    reference = reference or _cpu_reference(work)
    reference, candidate = _interleaved_best(run, reference) if run is not None else (best, best)
    agree = (probs.cpu() >= work.threshold) == (work.reference_probs >= work.threshold)
    agreement = agree.float().mean().item()
    speedup = reference / candidate
    benchmark.extra_info.update(
        {
            "frames": CHUNK,
            "image_size": SIZE,
            "frames_per_s": CHUNK / best,
            "speedup_vs_reference": speedup,
            "reference_ms": reference * 1e3,
            "label_agreement": agreement,
            "max_abs_diff": (probs.cpu() - work.reference_probs).abs().max().item(),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
    )
    work.rows.append((name, best * 1e3, speedup, agreement))


def test_reference_seed_pipeline(benchmark, workload):
    with torch.no_grad():
        probs = benchmark.pedantic(
            reference_pipeline,
            args=(workload.model, workload.chunk, workload.proprio),
            rounds=ROUNDS,
        )
    _report(benchmark, workload, "reference (seed)", probs)


# On CUDA, TorchBackend fuses bias and ReLU into cuDNN's convolutions unless fused_conv=False.
CUDA_TORCH_VARIANTS = {
    "torch-cuda": {},
    "torch-cuda-fp16": dict(amp_dtype="float16"),
    "torch-cuda-fp16-graph": dict(amp_dtype="float16", cuda_graph=True),
    "torch-cuda-fp16-compile-graph-unfused": dict(
        amp_dtype="float16", compile=True, cuda_graph=True, fused_conv=False
    ),
    "torch-cuda-fp16-compile-graph": dict(amp_dtype="float16", compile=True, cuda_graph=True),
}


def _backend(name: str, work: Workload) -> RewardBackend:
    if name in CUDA_TORCH_VARIANTS:
        if not torch.cuda.is_available():
            pytest.skip("needs a CUDA GPU")
        return TorchBackend(work.model, "cuda", chunk_size=CHUNK, **CUDA_TORCH_VARIANTS[name])
    if name in ("torch", "torch-compile"):
        return TorchBackend(work.model, "cpu", chunk_size=CHUNK, compile=name == "torch-compile")
    if name.startswith("onnxruntime"):
        return OnnxBackend(work.export_dir / f"reward_{name.split('-')[1]}.onnx", chunk_size=CHUNK)
    reason = tensorrt_unavailable_reason()
    if reason is not None:
        pytest.skip(f"TensorRT unusable: {reason}")
    return TensorRTBackend(work.export_dir / "reward_fp16.onnx", "cuda", chunk_size=CHUNK)


@pytest.mark.parametrize(
    "name",
    [
        "torch",
        "torch-compile",
        "onnxruntime-fp32",
        "onnxruntime-int8",
        *CUDA_TORCH_VARIANTS,
        "tensorrt",
    ],
)
def test_backend_end_to_end(benchmark, workload, name):
    backend = _backend(name, workload)
    chunk = workload.chunk.to(backend.device)
    proprio = _to(workload.proprio, backend.device)

    def run() -> torch.Tensor:
        probs = backend(chunk, proprio)
        if backend.device.type == "cuda":
            torch.cuda.synchronize(backend.device)
        return probs

    probs = benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=1)
    on_gpu = backend.device.type == "cuda"
    reference = _cuda_reference(workload) if on_gpu else None
    _report(benchmark, workload, name, probs, run, reference)


GPU_FAST = CUDA_TORCH_VARIANTS["torch-cuda-fp16-compile-graph"]

# The path around the network (issue #17): RewardTransform relabelling a rollout tensordict,
# against its own backend scoring frames already on its device. Variants: (backend, device,
# backend options, where the rollout lives).
PATH_VARIANTS = {
    "cpu-torch": ("torch", "cpu", {}, "cpu"),
    "cpu-onnxruntime-int8": ("onnxruntime", "cpu", {}, "cpu"),
    "cuda-fp16-compile-graph": ("torch", "cuda", GPU_FAST, "cpu"),
    "cuda-fp16-compile-graph-pinned": ("torch", "cuda", GPU_FAST, "pinned"),
    "cuda-fp16-compile-graph-resident": ("torch", "cuda", GPU_FAST, "cuda"),
}
PATH_ROUNDS = 3  # on the CPU, seconds each; a GPU variant's best is of GPU_PATH_ROUNDS
GPU_PATH_ROUNDS = 30


def _transform(work: Workload, name: str) -> RewardTransform:
    """The variant's RewardTransform, built once per run (a compiled GPU backend takes ~1 min)."""
    backend, device, options, _ = PATH_VARIANTS[name]
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    key = (backend, device)
    if key not in work.transforms:
        work.transforms[key] = RewardTransform(
            model=work.model,
            device=device,
            strict=True,
            backend=backend,
            export_dir=work.export_dir,
            backend_kwargs=options,
            chunk_size=CHUNK,
        )
    transform = work.transforms[key]
    if backend == "onnxruntime" and transform.backend.name != "onnxruntime-int8":
        pytest.skip(f"the int8 export failed its parity check ({transform.backend.name} chosen)")
    return transform


def _rollout(work: Workload, n: int, where: str, nested: bool = True) -> TensorDict:
    """The first ``n`` frames (and their proprio entries) as a batch the collector gives
    (post-step entries under ``"next"``), or, with ``nested=False``, one step's ``next``
    tensordict as an env hands it to the transform."""
    step = {
        "pixels": work.chunk[:n],
        "reward": torch.zeros(n, 1),
        "done": torch.zeros(n, 1, dtype=torch.bool),
    }
    if work.proprio is not None:
        widths = list(work.model.proprio.values())
        step.update(zip(work.model.proprio, work.proprio[:n].split(widths, dim=-1), strict=True))
    data = TensorDict({"next": step} if nested else step, batch_size=[n])
    if where == "pinned":
        return data.pin_memory()
    return data.to(where)


def _timed(device: torch.device, fn: Callable[[], object]) -> Callable[[], object]:
    def run() -> object:
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out

    return run


def _best_ms(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Best milliseconds of each function, timed in turn each round so load drifts cancel."""
    for fn in fns.values():
        fn()  # warm-up
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: seconds * 1e3 for name, seconds in best.items()}


def _preprocess_fn(backend: RewardBackend, frames: torch.Tensor) -> Callable[[], torch.Tensor]:
    """The backend's own preprocessing of ``frames`` (on its device), alone."""
    if isinstance(backend, TorchBackend):
        dtype = torch.float16 if backend.amp_dtype is torch.float16 else torch.float32
        return lambda: backend.model.preprocess(
            frames, dtype=dtype, channels_last=backend.channels_last
        )
    meta = backend.metadata
    return lambda: preprocess_frames(
        frames, backend.num_views, meta["mean"], meta["std"], channels_last=False
    )


@pytest.mark.parametrize("name", list(PATH_VARIANTS))
def test_reward_path_breakdown(benchmark, workload, name):
    """Where the time of relabelling 256 frames goes: copy to the reward device,
    preprocessing, network, and the rest (checks, write-back into the tensordict)."""
    transform = _transform(workload, name)
    backend, device = transform.backend, transform.reward_device
    where = PATH_VARIANTS[name][3]
    data = _rollout(workload, CHUNK, where)
    on_device = workload.chunk.to(device)
    proprio = _to(workload.proprio, device)
    scorer = FrameScorer(backend)
    # The same batch relabelled again: the env's reward is read back from env_reward.
    run = _timed(device, lambda: transform(data))
    rounds = GPU_PATH_ROUNDS if device.type == "cuda" else PATH_ROUNDS
    benchmark.pedantic(run, rounds=rounds, warmup_rounds=1)
    host = data["next", "pixels"]
    fns = {
        "transform": run,
        "backend": _timed(device, lambda: backend(on_device, proprio)),
        "preprocess": _timed(device, _preprocess_fn(backend, on_device)),
    }
    if host.device != device:
        fns["copy"] = _timed(device, lambda: scorer.to_device(host, slice(0, CHUNK)))
    ms = _best_ms(fns, rounds)
    copy_ms = ms.get("copy", 0.0)
    phases = {
        "copy": copy_ms,
        "preprocess": ms["preprocess"],
        "network": ms["backend"] - ms["preprocess"],
        "rest": ms["transform"] - copy_ms - ms["backend"],
    }
    ratio = ms["transform"] / ms["backend"]
    benchmark.extra_info.update(
        {"frames": CHUNK, "transform_ms": ms["transform"], "backend_ms": ms["backend"]}
    )
    benchmark.extra_info.update({f"{k}_ms": v for k, v in phases.items()})
    workload.path_rows.append((name, ms["transform"], ms["backend"], ratio, phases))


def _print_path_rows(rows: list) -> None:
    print(f"\n\nRewardTransform on {CHUNK} frames of {SIZE} px vs its bare backend, best of")
    print(f"{PATH_ROUNDS} (CPU) or {GPU_PATH_ROUNDS} (GPU) interleaved rounds; phases in ms")
    print("(network = backend - preprocess, rest = transform - copy - backend: checks and")
    print("write-back)")
    head = f"{'variant':34s} {'transform':>9s} {'backend':>8s} {'ratio':>6s}"
    print(f"{head} {'copy':>7s} {'preproc':>8s} {'network':>8s} {'rest':>7s}")
    for name, total, bare, ratio, phases in rows:
        line = f"{name:34s} {total:9.2f} {bare:8.2f} {ratio:6.3f}"
        print(
            line + "".join(f" {phases[k]:7.2f}" for k in ("copy", "preprocess", "network", "rest"))
        )


@pytest.mark.parametrize("batch", [1, 4, 256])
@pytest.mark.parametrize("name", ["cpu-torch", "cpu-onnxruntime-int8", "cuda-fp16-compile-graph"])
def test_per_call_overhead(benchmark, workload, name, batch):
    """Per-step use in a TransformedEnv: one frame per env and step, from a CPU env. The
    transform's cost per call over its bare backend's on frames already on its device."""
    transform = _transform(workload, name)
    backend, device = transform.backend, transform.reward_device
    step = _rollout(workload, batch, "cpu", nested=False)
    on_device = workload.chunk[:batch].to(device)
    proprio = None if workload.proprio is None else workload.proprio[:batch].to(device)
    run = _timed(device, lambda: transform(step))
    rounds = PATH_ROUNDS if batch == CHUNK and device.type == "cpu" else 20
    benchmark.pedantic(run, rounds=rounds, warmup_rounds=1)
    bare = _timed(device, lambda: backend(on_device, proprio))
    ms = _best_ms({"transform": run, "backend": bare}, rounds)
    overhead = ms["transform"] - ms["backend"]
    benchmark.extra_info.update(
        {"batch": batch, "overhead_ms": overhead, "transform_ms": ms["transform"]}
    )
    workload.call_rows.append((name, batch, ms["transform"], ms["backend"], overhead))


def _print_call_rows(rows: list) -> None:
    print("\n\nper call (a CPU env's step tensordict), best of interleaved rounds, ms")
    head = f"{'variant':26s} {'batch':>5s} {'transform':>9s} {'backend':>8s}"
    print(f"{head} {'overhead':>8s} {'ratio':>6s}")
    for name, batch, total, bare, overhead in rows:
        line = f"{name:26s} {batch:5d} {total:9.3f} {bare:8.3f}"
        print(f"{line} {overhead:8.3f} {total / bare:6.3f}")
