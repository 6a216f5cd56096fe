"""The docstring examples of every ctxscale module run and print what they show (analysis has
its own, tests/test_analysis_docs.py)."""
import doctest
import importlib
import pkgutil

import pytest

import ctxscale

MODULES = sorted(m.name for m in pkgutil.walk_packages(ctxscale.__path__, "ctxscale."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed"


def test_some_examples_ran():
    # guards against a walk that finds nothing (and so tests nothing)
    attempted = sum(doctest.testmod(importlib.import_module(n), report=False).attempted for n in MODULES)
    assert len(MODULES) > 20 and attempted >= 10
