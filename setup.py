"""Build and install torchrl-reward.

The C++/CUDA preprocessing op in ``csrc/`` is built as a torch extension, so install with
``pip install --no-build-isolation -e .`` after torch (the Makefile does this).

The extension ``torchrl_reward._C`` always holds the CPU kernel; the CUDA kernel is added when
nvcc and a CUDA build of torch are present (no GPU needed to compile). Build knobs:
``TORCH_CUDA_ARCH_LIST`` (default ``9.0+PTX``: H100/H200, PTX for newer GPUs),
``TORCHRL_REWARD_BUILD_CUDA=0`` for a CPU-only build, ``CUDA_HOME`` to pick a toolkit.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


def _is_cuda_home(path: str | None) -> bool:
    return bool(path) and (Path(path) / "include" / "cuda_runtime.h").is_file()


def _find_cuda_home() -> str | None:
    """The CUDA toolkit folder: ``CUDA_HOME``/``CUDA_PATH``, else the one nvcc runs from.

    nvcc may be a wrapper script (e.g. ``/usr/local/bin/nvcc``) whose parent is no toolkit, so
    the folder is read from nvcc's own ``TOP`` variable rather than guessed from its path.
    """
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if _is_cuda_home(os.environ.get(var)):
            return os.environ[var]
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    dryrun = subprocess.run(
        [nvcc, "--dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"^#\$ TOP=(.+)$", dryrun.stdout + dryrun.stderr, re.MULTILINE)
    home = os.path.realpath(match.group(1).strip()) if match else None
    return home if _is_cuda_home(home) else None


def _find_cuda_lib_dir(cuda_home: str) -> str:
    """The folder holding libcudart: ``lib64``, ``lib`` or ``targets/<arch>/lib``."""
    home = Path(cuda_home)
    candidates = [home / "lib64", home / "lib", *sorted(home.glob("targets/*/lib"))]
    for folder in candidates:
        if any(folder.glob("libcudart.so*")):
            return str(folder)
    raise RuntimeError(
        f"setup.py: no libcudart.so under {cuda_home} (looked in "
        f"{', '.join(str(c) for c in candidates)}); set CUDA_HOME to a full CUDA toolkit "
        "or build CPU-only with TORCHRL_REWARD_BUILD_CUDA=0"
    )


# Set before torch.utils.cpp_extension is imported: it reads CUDA_HOME once at import.
CUDA_HOME = _find_cuda_home() if os.environ.get("TORCHRL_REWARD_BUILD_CUDA", "1") != "0" else None
if CUDA_HOME is not None:
    os.environ["CUDA_HOME"] = CUDA_HOME
os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0+PTX")

import torch  # noqa: E402
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402


def _extensions() -> list:
    """``torchrl_reward._C``: csrc/**/*.cpp, plus csrc/**/*.cu for a CUDA build."""
    sources = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").rglob("*.cpp"))
    sources = [s for s in sources if not s.startswith(os.path.join("csrc", "test"))]
    cxx_flags = ["-O3", "-fopenmp", "-ffp-contract=fast"]
    kwargs = {"extra_link_args": ["-fopenmp"]}
    if CUDA_HOME is not None and torch.version.cuda is not None:
        sources += sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").rglob("*.cu"))
        return [
            CUDAExtension(
                "torchrl_reward._C",
                sources,
                extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3"]},
                library_dirs=[_find_cuda_lib_dir(CUDA_HOME)],
                **kwargs,
            )
        ]
    return [
        CppExtension("torchrl_reward._C", sources, extra_compile_args={"cxx": cxx_flags}, **kwargs)
    ]


class BuildPyWithConfigs(build_py):
    """``build_py`` that also ships the repo's ``configs/`` as ``torchrl_reward/configs/``.

    scripts/ read ``configs/`` from the checkout; an installed (non-editable) package has no
    checkout, so ``torchrl_reward.hydra_configs.load_config`` reads this copy. An editable
    install reads the checkout's own ``configs/`` and gets no copy.
    """

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        source = ROOT / "configs"
        target = Path(self.build_lib) / "torchrl_reward" / "configs"
        for path in sorted(source.rglob("*.yaml")):
            destination = target / path.relative_to(source)
            self.mkpath(str(destination.parent))
            self.copy_file(str(path), str(destination))


setup(
    name="torchrl-reward",
    version="0.1.0",
    description="Learned visual success rewards for robot learning with TorchRL",
    packages=find_packages(include=["torchrl_reward", "torchrl_reward.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch==2.14.1",
        "torchvision==0.29.1",
        "torchrl>=0.14,<0.15",
        "tensordict>=0.14,<0.15",
        "torchmetrics==1.9.0",
        "mani_skill>=3.0.1",
        "hydra-core>=1.3",
        "tqdm",
        "matplotlib",
        "onnx",
        "onnxruntime",
        # runner=ray (torchrl's RayCollector, the reward model actor); light next to torch.
        "ray==2.40.0",
    ],
    extras_require={
        "dev": ["pytest", "pytest-benchmark", "ruff", "tensorboard"],
        "tensorrt": ["tensorrt>=10", "onnx"],
    },
    ext_modules=_extensions(),
    cmdclass={"build_ext": BuildExtension, "build_py": BuildPyWithConfigs},
)
