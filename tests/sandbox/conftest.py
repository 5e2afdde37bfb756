"""Fixtures for running the functions as deployed, in the Lambda-like sandbox.

Layers are built once per session for this machine's Python (the sandbox runs this
interpreter); a function is assembled from its handler folder and the two layers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from infra.packaging.layers import REPO_ROOT, LayerDirs, build

from .lambda_sandbox import (
    AssembledFunction,
    assemble_function,
    this_machine_platform,
    unavailable_reason,
)

REASON = unavailable_reason()


@pytest.fixture(scope="session")
def machine_layers(tmp_path_factory) -> LayerDirs:
    if REASON:
        # Never a skip: a machine that cannot run the sandbox fails, saying why.
        pytest.fail(f"Lambda sandbox unavailable: {REASON}")
    platform_tag, python_version = this_machine_platform()
    return build(
        tmp_path_factory.mktemp("machine-layers"),
        platform=platform_tag,
        python_version=python_version,
    )


@pytest.fixture
def assemble(machine_layers, tmp_path) -> Callable[..., AssembledFunction]:
    """``assemble("extract")``: lambdas/extract plus both layers, ready for the sandbox.

    ``exclude``: the exclude patterns of the function's code asset and of the common
    layer's asset (the dependencies layer's asset has none), to leave out what they do.
    """

    def make(
        name: str, *, runtime_packages: Sequence[str] = (), exclude: Sequence[str] = ()
    ) -> AssembledFunction:
        handler_dir = REPO_ROOT / "lambdas" / name
        if not (handler_dir / "handler.py").is_file():
            pytest.fail(f"{handler_dir}/handler.py is missing")
        return assemble_function(
            handler_dir,
            [machine_layers.dependencies, machine_layers.common],
            tmp_path / name,
            runtime_packages=runtime_packages,
            exclude={handler_dir: exclude, machine_layers.common: exclude},
        )

    return make


@pytest.fixture
def bare_function(machine_layers, tmp_path) -> AssembledFunction:
    """A function with an empty handler folder and both layers (for checks of the layers)."""
    code = tmp_path / "code" / "probe"
    code.mkdir(parents=True)
    return assemble_function(
        code, [machine_layers.dependencies, machine_layers.common], tmp_path / "probe"
    )
