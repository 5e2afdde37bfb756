"""Synthesize the app once per session, from layers built once per session.

The layers are built for Lambda (arm64, CPython 3.12) into a temporary folder, so the
tests need PyPI (or pip's cache) but no ``build/layers`` of the checkout.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# Before the first aws_cdk import starts the jsii runtime: no Node end-of-life banner.
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

# No skip without the infra extra: a missing install must fail, not pass quietly.
from aws_cdk import App, Stack  # noqa: E402
from aws_cdk.assertions import Template  # noqa: E402
from cdk_nag import AwsSolutionsChecks  # noqa: E402

from infra.app import build_app  # noqa: E402
from infra.constructs.functions import DB_INITIALIZER, EXTRACT, LOAD  # noqa: E402
from infra.packaging.layers import REPO_ROOT, LayerDirs, LayersNotBuilt, build  # noqa: E402

FUNCTION_NAMES = (EXTRACT.name, LOAD.name, DB_INITIALIZER.name)
# The role the `reserved` setup names as break-glass reader of the master secrets.
BREAK_GLASS_ROLE_ARN = "arn:aws:iam::123456789012:role/ops/BreakGlass"
# The Slack channel the `staging` setup posts its alerts to.
SLACK = {"slack_workspace_id": "T0123ABCD", "slack_channel_id": "C0123ABCD"}


@dataclass
class Synthesized:
    """One synthesized app: its template, or why synthesis failed, and the findings."""

    app: App
    stack: Stack
    findings: list[Any]
    error: Exception | None
    _template: dict[str, Any] | None

    @property
    def template(self) -> Template:
        if self._template is None:
            pytest.fail(f"synthesis failed: {self.error}")
        return Template.from_json(self._template)

    @property
    def raw(self) -> dict[str, Any]:
        if self._template is None:
            pytest.fail(f"synthesis failed: {self.error}")
        return self._template


def cdk_json_context() -> dict[str, Any]:
    """The context the CDK CLI passes from cdk.json (feature flags and defaults)."""
    return json.loads((REPO_ROOT / "cdk.json").read_text())["context"]


def build_test_app(context: dict[str, Any], outdir: Path) -> App:
    """``build_app`` with cdk.json's context, as the CLI would call it.

    The layers embed the project files; if someone edits them while the session runs,
    synthesis refuses the stale layers, so they are rebuilt once.
    """
    full_context = {**cdk_json_context(), **context}
    try:
        return build_app(full_context, outdir=str(outdir))
    except LayersNotBuilt:
        build(Path(context["layers_dir"]))
        return build_app(full_context, outdir=str(outdir))


def synthesize(context: dict[str, Any], outdir: Path) -> Synthesized:
    app = build_test_app(context, outdir)
    (stack,) = [child for child in app.node.children if isinstance(child, Stack)]
    template: dict[str, Any] | None = None
    error: Exception | None = None
    try:
        assembly = app.synth()
        template = assembly.get_stack_by_name(stack.stack_name).template
    except Exception as exc:  # noqa: BLE001 - reported by the tests that need the template
        error = exc
    # The same walk the validation plugin does during synth, but as a list to assert on.
    findings = list(AwsSolutionsChecks().validate_scope(app).violations)
    return Synthesized(app, stack, findings, error, template)


@pytest.fixture(scope="session")
def lambda_layers(tmp_path_factory) -> LayerDirs:
    """The real layers, built for Lambda, once per session."""
    return build(tmp_path_factory.mktemp("layers"))


@pytest.fixture(scope="session")
def code_root() -> Path:
    """``lambdas/``: the template is synthesized from the functions' real code only."""
    real = REPO_ROOT / "lambdas"
    missing = [name for name in FUNCTION_NAMES if not (real / name / "handler.py").is_file()]
    if missing:
        # A stand-in would make every asset test pass on code that does not exist.
        pytest.fail(f"lambdas/<name>/handler.py is missing for {missing}")
    return real


@pytest.fixture(scope="session")
def base_context(lambda_layers, code_root) -> dict[str, Any]:
    return {"layers_dir": str(lambda_layers.root), "lambdas_dir": str(code_root)}


@pytest.fixture(scope="session")
def cdk_out(tmp_path_factory) -> Path:
    """One cloud assembly folder for the session's syntheses. CDK copies an asset into
    it once (the dependencies layer is some 7,000 files) and a later synthesis finds it
    staged; each synthesis's template is read before the next one overwrites it."""
    return tmp_path_factory.mktemp("cdk.out")


@pytest.fixture(scope="session")
def learning(base_context, cdk_out) -> Synthesized:
    """The default setup (retain=false)."""
    return synthesize({**base_context, "retain": "false"}, cdk_out)


@pytest.fixture(scope="session")
def reserved(base_context, cdk_out) -> Synthesized:
    """The default setup with every switch turned: reserved concurrency, interface
    endpoints in every AZ and a break-glass role on, the reprocessing of changed marts
    off (-c reserved_concurrency=true -c endpoints_in_every_az=true
    -c break_glass_role_arn=... -c reprocess_changed_models=false)."""
    return synthesize(
        {
            **base_context,
            "reserved_concurrency": "true",
            "endpoints_in_every_az": "true",
            "reprocess_changed_models": "false",
            "break_glass_role_arn": BREAK_GLASS_ROLE_ARN,
        },
        cdk_out,
    )


@pytest.fixture(scope="session")
def kept(base_context, cdk_out) -> Synthesized:
    """The kept setup (retain=true)."""
    return synthesize({**base_context, "retain": "true"}, cdk_out)


@pytest.fixture(scope="session")
def staging(base_context, cdk_out) -> Synthesized:
    """The learning setup as the staging environment, with Slack alerts
    (-c env=staging -c slack_workspace_id=... -c slack_channel_id=...): the default
    setup's every resource under the environment's names (its nightly schedule off by
    default), plus the optional ones."""
    return synthesize({**base_context, "env": "staging", **SLACK}, cdk_out)
