"""The Python examples of the docs pages use the library as it is.

Most ``.. code-block:: python`` examples in ``docs/*.rst`` read real folders
or train at full size, so they cannot run in the test suite; the pages that
show output (``audit.rst``) are doctests instead (``tests/test_audit.py``),
and the examples gallery runs at docs build. What drifts in the others is the
API: a renamed parameter, a moved function. So every block here must parse,
its imports must work, and every call of a skxray callable named through
those imports must pass only keyword arguments that the callable accepts.
"""

import ast
import importlib
import inspect
import re
import textwrap
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
_BLOCK = re.compile(r"^(?P<indent> *)\.\. code-block:: python\n(?P<options>(?:(?P=indent) +:.*\n)*)\n", re.M)


def python_blocks(text):
    """Yield ``(line, source)`` of each ``code-block:: python`` in an rst text."""
    lines = text.splitlines()
    for match in _BLOCK.finditer(text):
        start = text.count("\n", 0, match.end())
        indent = len(match.group("indent"))
        body = []
        for line in lines[start:]:
            if line.strip() and len(line) - len(line.lstrip()) <= indent:
                break
            body.append(line)
        yield start + 1, textwrap.dedent("\n".join(body))


def _bind_imports(tree):
    """Execute the block's imports; return ``{name: object}`` of what they bind."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                module = importlib.import_module(alias.name)
                names[alias.asname or alias.name.split(".")[0]] = (
                    module if alias.asname else importlib.import_module(alias.name.split(".")[0])
                )
        elif isinstance(node, ast.ImportFrom):
            module = importlib.import_module(node.module)
            for alias in node.names:
                if not hasattr(module, alias.name):
                    importlib.import_module(f"{node.module}.{alias.name}")
                names[alias.asname or alias.name] = getattr(module, alias.name)
    return names


def _resolve(node, names):
    """The object an expression like ``a.b.c`` names, when ``a`` was imported; else None."""
    if isinstance(node, ast.Name):
        return names.get(node.id)
    if isinstance(node, ast.Attribute):
        owner = _resolve(node.value, names)
        if owner is None:
            return None
        if not hasattr(owner, node.attr):
            raise AttributeError(f"{ast.unparse(node)}: {owner!r} has no attribute {node.attr!r}")
        return getattr(owner, node.attr)
    return None


def _from_skxray(obj):
    module = getattr(obj, "__module__", None) or getattr(obj, "__name__", "")
    return str(module).split(".")[0] == "skxray"


def api_problems(source):
    """Why ``source`` no longer matches skxray's API (an empty list when it does)."""
    tree = ast.parse(source)
    names = _bind_imports(tree)
    problems = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        try:
            func = _resolve(node.func, names)
        except AttributeError as exc:
            problems.append(str(exc))
            continue
        if func is None or not callable(func) or not _from_skxray(func):
            continue
        try:
            params = inspect.signature(func).parameters
        except (TypeError, ValueError):  # a builtin without a signature
            continue
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            continue
        for keyword in node.keywords:
            if keyword.arg is not None and keyword.arg not in params:
                problems.append(f"{ast.unparse(node.func)}() has no parameter {keyword.arg!r}")
    return problems


def _all_blocks():
    for page in sorted(DOCS.glob("*.rst")):
        for line, source in python_blocks(page.read_text(encoding="utf-8")):
            if source.lstrip().startswith(">>>"):
                continue  # a doctest: run, with its output, by the page's own test
            yield pytest.param(source, id=f"{page.name}:{line}")


@pytest.mark.parametrize("source", list(_all_blocks()))
def test_docs_example_matches_the_api(source):
    assert api_problems(source) == []


def test_the_pages_have_python_examples():
    # Guards the block pattern itself: a change of the rst layout that made it
    # find nothing would make the test above pass vacuously.
    assert len(list(_all_blocks())) >= 30


def test_a_renamed_parameter_or_moved_name_is_caught():
    good = "from skxray import CNNClassifier\nCNNClassifier(lr=1e-3, max_epochs=2)\n"
    assert api_problems(good) == []
    assert api_problems("from skxray import CNNClassifier\nCNNClassifier(learning_rate=1e-3)\n") == [
        "CNNClassifier() has no parameter 'learning_rate'"
    ]
    assert api_problems("import skxray\nskxray.models.CNNClassifier.from_preset('benchmark', lr=1)\n") == []
    assert "has no attribute 'no_such'" in api_problems("import skxray\nskxray.no_such()\n")[0]
    with pytest.raises(ImportError):
        api_problems("from skxray.models import NoSuchClassifier\n")


def test_blocks_are_found_at_any_indent_with_options():
    text = (
        "Intro\n\n.. code-block:: python\n\n   a = 1\n   b = 2\n\nText\n\n"
        "- item\n\n  .. code-block:: python\n     :caption: x\n\n     c = 3\n\nEnd\n"
    )
    assert [source.strip() for _, source in python_blocks(text)] == ["a = 1\nb = 2", "c = 3"]
