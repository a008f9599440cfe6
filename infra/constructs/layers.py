"""Lambda layers for the shared `gantry` package and its third-party dependencies.

Both are built by CDK *local* bundling, in the process that runs the CDK app: no Docker.
The Docker image named in the bundling options is never used (every local bundler
returns True), but CDK requires one.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsii
from aws_cdk import BundlingOptions, DockerImage, ILocalBundling, RemovalPolicy
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from infra.constants import (
    ASSET_EXCLUDES,
    DEPENDENCIES_DIR,
    LAMBDA_PYTHON_VERSION,
    PIP_IMPLEMENTATION,
    PIP_PLATFORM,
    REQUIREMENTS_FILE,
    SHARED_PACKAGE,
    SHARED_PACKAGE_ROOT,
)

LAYER_RUNTIME = lambda_.Runtime.PYTHON_3_12
LAYER_ARCHITECTURE = lambda_.Architecture.ARM_64
# Lambda adds /opt/python to sys.path: layer contents must live under python/.
LAYER_PYTHON_DIR = "python"


def pip_install_args(requirements: str, target: str) -> list[str]:
    """`pip install` arguments that fetch wheels for Lambda's CPython 3.12 on arm64."""
    return [
        "install",
        "--disable-pip-version-check",
        "--no-input",
        "--no-compile",
        "--quiet",
        "--platform",
        PIP_PLATFORM,
        "--only-binary=:all:",
        "--python-version",
        LAMBDA_PYTHON_VERSION,
        "--implementation",
        PIP_IMPLEMENTATION,
        "--target",
        target,
        "--requirement",
        requirements,
    ]


@jsii.implements(ILocalBundling)
class CopyPackageBundler:
    """Copies a Python package directory to `python/<name>` in the asset, without caches."""

    def __init__(self, package_dir: Path) -> None:
        self.package_dir = package_dir

    # jsii passes the BundlingOptions struct as keyword arguments (needs one keyword-only arg).
    def try_bundle(self, output_dir: str, *, image: DockerImage, **_options: Any) -> bool:
        target = Path(output_dir) / LAYER_PYTHON_DIR / self.package_dir.name
        shutil.copytree(self.package_dir, target, ignore=shutil.ignore_patterns(*ASSET_EXCLUDES))
        return True


@jsii.implements(ILocalBundling)
class PipLayerBundler:
    """Installs a requirements file into `python/` as manylinux aarch64 CPython 3.12 wheels."""

    def __init__(self, requirements: Path) -> None:
        self.requirements = requirements

    def try_bundle(self, output_dir: str, *, image: DockerImage, **_options: Any) -> bool:
        target = Path(output_dir) / LAYER_PYTHON_DIR
        command = [
            sys.executable,
            "-m",
            "pip",
            *pip_install_args(str(self.requirements), str(target)),
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(
                f"bundling the dependencies layer failed (pip exit {result.returncode}):\n"
                f"{' '.join(command)}\n{result.stderr or result.stdout}"
            )
        # Console scripts are useless in a layer (and not on PATH there).
        shutil.rmtree(target / "bin", ignore_errors=True)
        for cache in target.rglob("__pycache__"):
            shutil.rmtree(cache, ignore_errors=True)
        return True


def _nominal_image() -> DockerImage:
    return LAYER_RUNTIME.bundling_image


def shared_code_asset(package_dir: Path = SHARED_PACKAGE_ROOT / SHARED_PACKAGE) -> lambda_.Code:
    return lambda_.Code.from_asset(
        str(package_dir),
        exclude=list(ASSET_EXCLUDES),
        bundling=BundlingOptions(
            image=_nominal_image(),
            command=[
                "bash",
                "-c",
                f"mkdir -p /asset-output/{LAYER_PYTHON_DIR}/{package_dir.name} && "
                f"cp -r /asset-input/. /asset-output/{LAYER_PYTHON_DIR}/{package_dir.name}/",
            ],
            local=CopyPackageBundler(package_dir),
        ),
    )


def dependencies_asset(dependencies_dir: Path = DEPENDENCIES_DIR) -> lambda_.Code:
    return lambda_.Code.from_asset(
        str(dependencies_dir),
        exclude=list(ASSET_EXCLUDES),
        bundling=BundlingOptions(
            image=_nominal_image(),
            # Mirrors the local command, and puts the pip flags in the asset fingerprint.
            command=[
                "pip",
                *pip_install_args(REQUIREMENTS_FILE, f"/asset-output/{LAYER_PYTHON_DIR}"),
            ],
            local=PipLayerBundler(dependencies_dir / REQUIREMENTS_FILE),
        ),
    )


class SharedLayers(Construct):
    """The two layers every Gantry function uses: dependencies first, then `gantry`."""

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self.dependencies = lambda_.LayerVersion(
            self,
            "Dependencies",
            code=dependencies_asset(),
            compatible_runtimes=[LAYER_RUNTIME],
            compatible_architectures=[LAYER_ARCHITECTURE],
            description="Gantry third-party dependencies (FastAPI, Mangum, Powertools, pydantic)",
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.shared_code = lambda_.LayerVersion(
            self,
            "SharedCode",
            code=shared_code_asset(),
            compatible_runtimes=[LAYER_RUNTIME],
            compatible_architectures=[LAYER_ARCHITECTURE],
            description="Gantry shared package (gantry)",
            removal_policy=RemovalPolicy.DESTROY,
        )

    @property
    def all(self) -> list[lambda_.ILayerVersion]:
        return [self.dependencies, self.shared_code]
