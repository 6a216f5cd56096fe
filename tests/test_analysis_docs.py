"""The examples in the analysis docstrings run and print what they show."""
import doctest
import importlib

import pytest

MODULES = ["forms", "optimum", "surface", "bayes", "examples", "results", "report"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"analysis.{name}")
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def test_analysis_imports_neither_ray_nor_torch():
    import subprocess
    import sys

    code = "import sys, analysis, analysis.plots; print(sorted({'ray', 'torch'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
