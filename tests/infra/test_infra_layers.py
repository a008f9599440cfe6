"""Local bundlers for the layers (no Docker, no network: pip itself is stubbed here)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import DockerImage

from infra.constants import DEPENDENCIES_DIR, REPO_ROOT, REQUIREMENTS_FILE, SHARED_PACKAGE_ROOT
from infra.constructs.layers import CopyPackageBundler, PipLayerBundler, pip_install_args

IMAGE = DockerImage.from_registry("nominal")
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?")


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _names(lines: list[str]) -> set[str]:
    """Requirement names with their extras: `pkg[extra]>=1` -> `pkg[extra]`."""
    names = set()
    for line in lines:
        match = _NAME.match(line.split("#", 1)[0])
        if match:
            extras = sorted(e.strip() for e in (match.group(2) or "[]")[1:-1].split(",") if e)
            names.add(_normalize(match.group(1)) + (f"[{','.join(extras)}]" if extras else ""))
    return names


def test_shared_package_is_copied_under_python(tmp_path: Path) -> None:
    package = tmp_path / "src" / "gantry"
    (package / "domain" / "__pycache__").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "models.json").write_text("{}")
    (package / "domain" / "keys.py").write_text("X = 1\n")
    (package / "domain" / "__pycache__" / "keys.cpython-311.pyc").write_bytes(b"\0")
    out = tmp_path / "out"
    out.mkdir()

    assert CopyPackageBundler(package).try_bundle(str(out), image=IMAGE) is True

    copied = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert copied == {
        "python/gantry/__init__.py",
        "python/gantry/models.json",
        "python/gantry/domain/keys.py",
    }


def test_real_shared_package_layout() -> None:
    assert (SHARED_PACKAGE_ROOT / "gantry" / "__init__.py").is_file()
    assert (SHARED_PACKAGE_ROOT / "gantry" / "tables.py").is_file()


def test_pip_targets_lambda_python312_arm64() -> None:
    args = pip_install_args("requirements.txt", "/out/python")
    joined = " ".join(args)
    assert args[0] == "install"
    assert "--platform manylinux2014_aarch64" in joined
    assert "--only-binary=:all:" in args
    assert "--python-version 3.12" in joined
    assert "--implementation cp" in joined
    assert "--target /out/python" in joined
    assert "--no-compile" in args  # host-version .pyc files would be useless in the layer


def test_pip_bundler_installs_into_python_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []

    def fake_run(command: list[str], **_kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append(command)
        target = Path(command[command.index("--target") + 1])
        (target / "bin").mkdir(parents=True)
        (target / "fastapi" / "__pycache__").mkdir(parents=True)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_run)
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("fastapi\n")

    assert PipLayerBundler(requirements).try_bundle(str(tmp_path / "out"), image=IMAGE)

    (command,) = calls
    assert command[:3] == [sys.executable, "-m", "pip"]
    assert command[command.index("--target") + 1] == str(tmp_path / "out" / "python")
    assert command[command.index("--requirement") + 1] == str(requirements)
    assert not (tmp_path / "out" / "python" / "bin").exists()
    assert not (tmp_path / "out" / "python" / "fastapi" / "__pycache__").exists()


def test_pip_failure_fails_the_synth(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_run(command: list[str], **_kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(command, 1, "", "No matching distribution")

    monkeypatch.setattr(subprocess, "run", failing_run)
    bundler = PipLayerBundler(tmp_path / "requirements.txt")
    with pytest.raises(RuntimeError, match="No matching distribution"):
        bundler.try_bundle(str(tmp_path / "out"), image=IMAGE)


def test_dependency_layer_matches_project_dependencies() -> None:
    """Every runtime dependency of the project ships in the layer, except boto3 (in Lambda)."""
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    declared = {
        name
        for name in _names(pyproject["project"]["dependencies"])
        if name.split("[")[0] not in {"boto3", "botocore"}
    }
    requirements = (DEPENDENCIES_DIR / REQUIREMENTS_FILE).read_text().splitlines()
    shipped = _names(requirements)
    assert declared <= shipped, declared - shipped
    assert not {name for name in shipped if name.startswith("boto")}
    for line in requirements:
        if _NAME.match(line.split("#", 1)[0]):
            assert "==" in line, f"pin layer dependencies exactly: {line}"
