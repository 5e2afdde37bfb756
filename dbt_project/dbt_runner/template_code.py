"""dbt's Jinja templates compiled once per text, not once per render.

dbt renders each node's SQL, and each argument of each data test, through a new Jinja
environment and a new template every time: Jinja lexes and parses the text, generates
Python from it and compiles that, at every call, for text that has not changed since
the last one. Jinja's own answer to this is a cache of compiled code (its bytecode
cache), but dbt's fresh environment per template never reuses one.

The cache here keeps the compiled code by the text and by all that shapes the code
Jinja generates for it: the environment's class (dbt's native-types environment
generates other code), its extensions, the names of its filters and tests, and its
autoescape and finalize settings. What dbt gives at render time (the context, the
undefined type it captures macros with) never enters the code, so a template made
from cached code renders as one compiled anew. dbt's macro debugging, which names
each compiled template after a file of its own, compiles as before.
"""

from __future__ import annotations

from types import CodeType

# A project has a bounded number of texts; a runaway caller cannot grow it further.
_MOST_TEXTS = 8192
_codes: dict[tuple, CodeType] = {}
_patched = False


def compile_templates_once() -> None:
    """Install the cache on dbt's Jinja environments (once per process; the runner
    calls it under its lock, before dbt parses or renders)."""
    global _patched
    if _patched:
        return
    import jinja2
    from dbt_common.clients import jinja as dbt_jinja

    compile_anew = jinja2.Environment.compile

    def compile(self, source, name=None, filename=None, raw=False, defer_init=False):
        if raw or not isinstance(source, str) or dbt_jinja.MACRO_DEBUGGING:
            return compile_anew(self, source, name, filename, raw, defer_init)
        key = (
            type(self),
            source,
            name,
            filename,
            defer_init,
            tuple(sorted(self.extensions)),
            frozenset(self.filters),
            frozenset(self.tests),
            self.autoescape,
            self.finalize,
        )
        code = _codes.get(key)
        if code is None:
            code = compile_anew(self, source, name, filename, raw, defer_init)
            if len(_codes) < _MOST_TEXTS:
                _codes[key] = code
        return code

    # Hidden from template tracebacks, as Jinja hides its own compile.
    dbt_jinja.MacroFuzzEnvironment.compile = jinja2.utils.internalcode(compile)
    _patched = True
