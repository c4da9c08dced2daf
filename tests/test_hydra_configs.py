"""Hydra configs from Python: in a checkout, an installed package or $TORCHRL_REWARD_CONFIGS."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from torchrl_reward.hydra_configs import CONFIGS_ENV_VAR, REPO_ROOT, config_dir, load_config


def test_checkout_configs_compose_with_command_line_overrides(monkeypatch):
    monkeypatch.delenv(CONFIGS_ENV_VAR, raising=False)
    assert config_dir() == REPO_ROOT / "configs"
    cfg = load_config("ppo", ["init=weak_bc", "ppo.gamma=0.99", "reward=resnet"])
    assert cfg.ppo.gamma == 0.99
    assert cfg.runner.init_from == "checkpoints/ppo_pickcube_weak_bc.pt"
    assert cfg.reward.use_reward_model


def test_env_var_names_the_configs_read(monkeypatch, tmp_path):
    configs = shutil.copytree(REPO_ROOT / "configs", tmp_path / "configs")
    ppo = configs / "ppo.yaml"
    ppo.write_text(ppo.read_text().replace("seed: 1", "seed: 123"))
    monkeypatch.setenv(CONFIGS_ENV_VAR, str(configs))
    assert config_dir() == configs
    assert load_config("ppo").seed == 123


def test_missing_configs_say_where_they_were_looked_for(monkeypatch, tmp_path):
    monkeypatch.setenv(CONFIGS_ENV_VAR, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=rf"{CONFIGS_ENV_VAR}") as err:
        load_config("ppo")
    assert str(tmp_path) in str(err.value)


def test_unknown_config_is_named(monkeypatch):
    monkeypatch.delenv(CONFIGS_ENV_VAR, raising=False)
    with pytest.raises(FileNotFoundError, match="'nope'"):
        load_config("nope")


def test_built_package_ships_its_configs(tmp_path):
    """``setup.py build_py`` (what ``pip install .`` runs) copies configs/ into the package,
    and the package built there reads that copy, not the checkout's."""
    lib = tmp_path / "lib"
    subprocess.run(
        [sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(lib)],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
    )
    shipped = lib / "torchrl_reward" / "configs"
    sources = sorted(
        p.relative_to(REPO_ROOT / "configs") for p in (REPO_ROOT / "configs").rglob("*.yaml")
    )
    assert sorted(p.relative_to(shipped) for p in shipped.rglob("*.yaml")) == sources
    env = {k: v for k, v in os.environ.items() if k != CONFIGS_ENV_VAR}
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "from torchrl_reward.hydra_configs import config_dir, load_config; "
            "print(config_dir()); print(load_config('ppo', ['init=weak_bc']).ppo.total_frames)",
        ],
        cwd=tmp_path,  # not the checkout: the built package comes first on the path
        env={**env, "PYTHONPATH": str(lib)},
        check=True,
        capture_output=True,
        text=True,
    )
    found, total_frames = probe.stdout.split()
    assert Path(found) == shipped
    assert int(total_frames) == 400_000
