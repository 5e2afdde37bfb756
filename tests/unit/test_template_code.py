"""dbt's templates compiled once per text render as templates compiled anew."""

from __future__ import annotations

import jinja2
import pytest
from dbt_common.clients.jinja import get_template
from dbt_common.exceptions import CompilationError

from dbt_project.dbt_runner import template_code


@pytest.fixture(autouse=True)
def cached():
    template_code.compile_templates_once()


def test_a_text_is_compiled_once_and_each_render_reads_its_own_context(monkeypatch):
    calls = []
    compile_anew = jinja2.Environment._generate

    def counted(self, *args, **kwargs):
        calls.append(args[0])
        return compile_anew(self, *args, **kwargs)

    monkeypatch.setattr(jinja2.Environment, "_generate", counted)
    text = "select {{ column }} from {{ table }} -- test_a_text_is_compiled_once"
    first = get_template(text, {"table": "orders"}).render({"column": "order_id"})
    second = get_template(text, {"table": "customers"}).render({"column": "customer_id"})

    assert first == "select order_id from orders -- test_a_text_is_compiled_once"
    assert second == "select customer_id from customers -- test_a_text_is_compiled_once"
    assert len(calls) == 1


def test_native_and_text_templates_of_one_text_keep_their_own_code():
    # dbt's native environment generates code that keeps a value's type.
    text = "{{ x + 2 }}"
    for _ in range(2):
        assert get_template(text, {}, native=True).render({"x": 40}) == 42
        assert get_template(text, {}).render({"x": 40}) == "42"


def test_a_compile_error_is_raised_at_every_call_not_kept():
    # A missing filter is found when Jinja compiles; a failed compile keeps nothing.
    assert get_template("{{ 'a' | as_text }}", {}).render({}) == "a"
    with pytest.raises(CompilationError, match="No filter named 'no_such_filter'"):
        get_template("{{ 'a' | no_such_filter }}", {})
    with pytest.raises(CompilationError, match="No filter named 'no_such_filter'"):
        get_template("{{ 'a' | no_such_filter }}", {})


def test_a_syntax_error_still_names_its_line():
    text = "select 1\n{% if %}"
    for _ in range(2):
        with pytest.raises(CompilationError, match="line 2"):
            get_template(text, {})
