"""Repository layout rules that pytest does not check by itself."""

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_test_module_names_are_unique():
    """Test folders have no __init__.py, so two test files with one basename break collection of the suite."""
    names = Counter(path.name for path in TESTS.rglob("test_*.py"))
    duplicates = sorted(name for name, count in names.items() if count > 1)
    assert duplicates == []
