"""The examples in the analysis docstrings run and print what they show; importing analysis stays light."""
import doctest
import importlib
import pkgutil
import subprocess
import sys

import pytest

import analysis

MODULES = sorted(m.name for m in pkgutil.iter_modules(analysis.__path__))


def test_every_module_is_listed():
    assert {"forms", "optimum", "step_optimum", "present", "stats", "plots", "report"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"analysis.{name}")
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def _imported_after(code: str) -> set:
    out = subprocess.run([sys.executable, "-c", f"import sys; {code}; print(sorted(sys.modules))"],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    return {name.split(".")[0] for name in eval(out)}


def test_analysis_imports_neither_ray_nor_torch():
    assert not {"ray", "torch"} & _imported_after("import analysis, analysis.plots")


def test_matplotlib_is_imported_only_to_draw():
    assert "matplotlib" not in _imported_after("import analysis")
    assert "matplotlib" in _imported_after("import analysis.plots")
