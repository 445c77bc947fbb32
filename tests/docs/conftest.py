"""Fixtures of the documentation's tests: the MkDocs hook that makes the references, loaded from docs/hooks/."""
import importlib.util

import pytest


@pytest.fixture(scope="session")
def reference(repo):
    """docs/hooks/reference.py as a module: recipe_keys(), components(), recipes(), problems(), render()."""
    spec = importlib.util.spec_from_file_location("docs_reference_hook", repo / "docs/hooks/reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
