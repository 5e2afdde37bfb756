"""dbt's per-node macro namespace, built in one loop and copied into the context without
a search per name, is the namespace and the context dbt's own code makes."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from dbt.adapters.factory import get_adapter_package_names
from dbt.cli.main import dbtRunner
from dbt.clients.jinja import MacroGenerator, MacroStack
from dbt.context.macros import MacroNamespace, MacroNamespaceBuilder
from dbt.context.manifest import ManifestContext
from dbt.exceptions import DuplicateMacroNameError

from dbt_project.dbt_runner import macro_namespace
from dbt_project.dbt_runner import parse_cache as dbt_parse
from dbt_project.dbt_runner.runner import DbtProject
from dbt_project.facts.names import SOURCE_TARGET
from dbt_project.settings import scoped_environ

PROJECT = "shop"


def _parse(tmp_path, dbt):
    """dbt's full parse of the project, in this process, as the runner tunes dbt."""
    dbt._tune_dbt()
    args = [
        *("parse", "--project-dir", str(dbt.root), "--profiles-dir", str(dbt.root)),
        *("--target", SOURCE_TARGET, "--target-path", str(tmp_path / "target")),
        *("--log-path", str(tmp_path / "logs"), "--no-partial-parse", "--quiet"),
    ]
    with scoped_environ(dbt_parse.parse_env(SOURCE_TARGET)):
        run = dbtRunner().invoke(args)
    assert run.success, run.exception
    return run.result


def _lookup_differences(context: dict, namespace: MacroNamespace, before: dict) -> list[str]:
    """Names whose value is not what dbt's own lookup (the namespace's search of its
    five dicts) finds first, and other names whose value changed."""
    names = set(namespace)  # dbt's own iteration and lookup
    wrong = [name for name in names if context.get(name) is not namespace[name]]
    changed = [k for k, v in before.items() if k not in names and context.get(k) is not v]
    return wrong + changed


@pytest.fixture(scope="module")
def watched(tmp_path_factory):
    """One full parse with the quick code installed, each context it copies a namespace
    into compared with dbt's lookup as it is made."""
    assert macro_namespace.build_namespaces_quickly()
    quick = ManifestContext.to_dict
    checked, differences = [], []

    def compared(self):
        builtins = {"context", "builtins", *self._context_members_}
        before = {k: v for k, v in self._ctx.items() if k not in builtins}
        context = quick(self)
        if type(self.namespace) is MacroNamespace:
            differences.extend(_lookup_differences(context, self.namespace, before))
            checked.append(self)
        return context

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ManifestContext, "to_dict", compared)
        manifest = _parse(tmp_path_factory.mktemp("parse"), DbtProject())
    return SimpleNamespace(manifest=manifest, checked=checked, differences=differences)


@pytest.fixture(scope="module")
def manifest(watched):
    return watched.manifest


def _parts(namespace: MacroNamespace) -> dict[str, dict]:
    packages = {f"package {name}": macros for name, macros in namespace.packages.items()}
    return {
        "local": namespace.local_namespace,
        "global": namespace.global_namespace,
        "internal": namespace.global_project_namespace,
        **packages,
    }


@pytest.mark.parametrize("search_package", [PROJECT, "dbt", "dbt_postgres", "elsewhere"])
def test_the_namespace_is_the_one_dbt_builds(manifest, search_package):
    assert macro_namespace.build_namespaces_quickly()
    node, stack, context = object(), MacroStack(), {}
    internal = get_adapter_package_names("postgres")

    def built(build) -> MacroNamespace:
        builder = MacroNamespaceBuilder(PROJECT, search_package, stack, internal, node)
        return build(builder, manifest.get_macros_by_package(), context)

    quick = built(MacroNamespaceBuilder.build_namespace)
    dbt_s = built(macro_namespace.DBT_S_OWN["build_namespace"])
    assert quick is not dbt_s and type(quick) is MacroNamespace

    mine, theirs = _parts(quick), _parts(dbt_s)
    assert mine.keys() == theirs.keys()
    for part, macros in theirs.items():
        assert list(mine[part]) == list(macros), part
        for name, generator in macros.items():
            made = mine[part][name]
            assert type(made) is MacroGenerator and vars(made) == vars(generator), (part, name)
    assert len(quick) == len(dbt_s) > 500


def test_a_macro_named_twice_in_a_package_is_refused_as_dbt_refuses_it():
    assert macro_namespace.build_namespaces_quickly()
    first, again = (
        SimpleNamespace(
            name="twice", package_name="p", unique_id=f"macro.p.{n}", original_file_path=f"{n}.sql"
        )
        for n in ("twice", "twice_2")
    )
    # Two lists of one package: dbt's own manifest never makes them, a hand-made one can.
    macros = {"p": {"twice": first}, "p again": {"twice": again}}

    def refusal(build) -> str:
        builder = MacroNamespaceBuilder("root", "p", MacroStack(), ["dbt"], None)
        with pytest.raises(DuplicateMacroNameError) as raised:
            build(builder, macros, {})
        return str(raised.value)

    quick = refusal(MacroNamespaceBuilder.build_namespace)
    assert quick == refusal(macro_namespace.DBT_S_OWN["build_namespace"])
    assert "twice" in quick


def _colliding() -> MacroNamespace:
    """Names in several of the five dicts dbt searches, a package named like a macro."""

    def part(tag: str, *names: str) -> dict:
        return {name: object() for name in names} | {"tag": tag}

    return MacroNamespace(
        local_namespace=part("local", "a", "b"),
        global_namespace=part("global", "a", "c", "x"),
        packages={"a": part("package a"), "p": part("package p"), "dbt": part("package dbt")},
        global_project_namespace=part("internal", "a", "c", "p", "x", "i", "dbt"),
    )


def test_each_context_holds_what_dbt_s_search_finds_for_each_name(watched):
    """Every context the parse built, then one of them again with a namespace whose
    names collide."""
    assert len(watched.checked) > 5 and watched.differences == []

    last = watched.checked[-1]
    last.namespace = colliding = _colliding()
    context = ManifestContext.to_dict(last)
    assert _lookup_differences(context, colliding, {}) == []
    assert context["a"] is colliding.local_namespace["a"]
    assert context["c"] is colliding.global_namespace["c"]
    assert context["p"] is colliding.packages["p"]
    assert context["dbt"] is colliding.packages["dbt"]
    assert context["i"] is colliding.global_project_namespace["i"]


def test_dbt_s_code_stays_when_its_callable_is_made_otherwise(monkeypatch):
    build, to_dict = MacroNamespaceBuilder.build_namespace, ManifestContext.to_dict
    made_by_dbt = MacroGenerator.__init__

    def with_another_attribute(self, *args, **kwargs):
        made_by_dbt(self, *args, **kwargs)
        self.depth = 0

    monkeypatch.setattr(MacroGenerator, "__init__", with_another_attribute)
    # The install itself, not its once-per-process wrapper.
    assert macro_namespace.build_namespaces_quickly.__wrapped__() is False
    assert MacroNamespaceBuilder.build_namespace is build and ManifestContext.to_dict is to_dict
