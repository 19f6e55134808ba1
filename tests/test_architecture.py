"""Rules about the code itself: no import cycle, no overly long function, one home per helper.

They read the source with :mod:`ast` (imports inside functions count too),
so they run in well under a second.
"""

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "skxray"

#: Longest function body in lines, docstring excluded. A longer function
#: needs a ``# long-function: <why>`` comment on its ``def`` line or the
#: line above it.
MAX_FUNCTION_LINES = 80
LONG_FUNCTION_MARK = "# long-function:"

#: Import edges allowed to close a cycle: none.
ALLOWED_CYCLE_EDGES = set()

#: Functions over MAX_FUNCTION_LINES allowed without a comment: none.
ALLOWED_LONG_FUNCTIONS = {}


def _modules():
    """Module name -> source file, for every module of the package."""
    found = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imported_modules(name, path, modules):
    """The skxray modules ``name`` imports anywhere (top level or in functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module
            for alias in node.names:
                full = f"{source}.{alias.name}"
                if full in modules:
                    out.add(full)  # "from skxray.models import cnn": the submodule
                elif source in modules:
                    out.add(source)
    out.discard(name)
    return out


def import_graph():
    """Module -> set of skxray modules it imports (a parent package's own
    ``__init__`` run by Python is not counted as an import)."""
    modules = _modules()
    return {name: _imported_modules(name, path, modules) for name, path in modules.items()}


def find_cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, result = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return result


def test_find_cycles_sees_a_cycle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_import_graph_sees_imports_inside_functions():
    graph = import_graph()
    # audit._cv imports skxray.explain only inside functions.
    assert "skxray.explain" in graph["skxray.audit._cv"]


def test_no_import_cycle():
    graph = import_graph()
    pruned = {m: {t for t in targets if (m, t) not in ALLOWED_CYCLE_EDGES} for m, targets in graph.items()}
    assert find_cycles(pruned) == []


def test_allowed_cycle_edges_still_exist():
    # An allowed edge that is gone must leave the list, so it cannot hide a new cycle.
    graph = import_graph()
    stale = sorted((m, t) for m, t in ALLOWED_CYCLE_EDGES if t not in graph.get(m, ()))
    assert stale == []


@pytest.mark.parametrize(
    "module",
    [
        "skxray._utils",
        "skxray._data",
        "skxray._validation",
        "skxray._param_validation",
        "skxray.models._registry",
    ],
)
def test_leaf_modules_import_nothing_from_skxray(module):
    # Any module may import these without risking a cycle.
    assert import_graph()[module] == set()


def _function_lengths():
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            length = node.end_lineno - node.lineno + 1
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                if isinstance(first.value.value, str):
                    length -= first.end_lineno - first.lineno + 1
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            context = "\n".join(lines[max(0, start - 2) : node.lineno])
            yield path.relative_to(PACKAGE_DIR).as_posix(), node.name, length, context


def test_no_function_is_too_long():
    too_long = [
        f"{file}:{name} ({length} lines)"
        for file, name, length, context in _function_lengths()
        if length > MAX_FUNCTION_LINES
        and LONG_FUNCTION_MARK not in context
        and (file, name) not in ALLOWED_LONG_FUNCTIONS
    ]
    assert too_long == [], (
        f"Functions over {MAX_FUNCTION_LINES} lines (docstring excluded): split them, or "
        f"say why they are long with a '{LONG_FUNCTION_MARK} <why>' comment above the def."
    )


def test_allowed_long_functions_are_still_long():
    lengths = {(file, name): length for file, name, length, _ in _function_lengths()}
    stale = [key for key in ALLOWED_LONG_FUNCTIONS if lengths.get(key, 0) <= MAX_FUNCTION_LINES]
    assert stale == []


def test_sklearn_parameter_validation_is_importable():
    # sklearn.utils._param_validation is private: constraints.txt pins the
    # tested scikit-learn, and this fails first if an upgrade moves it (then
    # vendor a copy into skxray/_param_validation.py, as imbalanced-learn does).
    from skxray._param_validation import Interval, InvalidParameterError, StrOptions

    assert issubclass(InvalidParameterError, ValueError)
    assert issubclass(InvalidParameterError, TypeError)
    assert Interval and StrOptions


def test_old_names_stay_importable():
    # Kept for code outside the package while the moves of issue #16 settle.
    base = importlib.import_module("skxray.models._base")
    data = importlib.import_module("skxray._data")
    utils = importlib.import_module("skxray._utils")
    assert base._ImagePathDataset is data.ImagePathDataset
    assert base._TensorImageDataset is data.TensorImageDataset
    assert base._private_generator_iterator is data.private_generator_iterator
    assert base.dumps_json is utils.dumps_json


def test_classifier_registry_names_the_library_classes():
    # For loading by class name without importing skxray.models back.
    from skxray.models import (
        CNNClassifier,
        FNNClassifier,
        PretrainedCXRClassifier,
        ResNet50Classifier,
    )
    from skxray.models._registry import CLASSIFIERS

    assert CLASSIFIERS == {
        "CNNClassifier": CNNClassifier,
        "FNNClassifier": FNNClassifier,
        "ResNet50Classifier": ResNet50Classifier,
        "PretrainedCXRClassifier": PretrainedCXRClassifier,
    }


@pytest.mark.parametrize("name", ["CNNClassifier", "FNNClassifier", "ResNet50Classifier", "PretrainedCXRClassifier"])
def test_every_shared_parameter_is_in_each_classifier_signature(name):
    # scikit-learn reads parameters from the __init__ signature: a shared
    # parameter missing from one class's signature is still set (to its
    # default) by a parent's __init__, but set_params, clone and the docs
    # would not know it. Every declared constraint must be a parameter.
    from skxray.models._registry import CLASSIFIERS

    cls = CLASSIFIERS[name]
    params = set(cls._get_param_names())
    assert set(cls._parameter_constraints) == params
    attributes = set(vars(cls()))
    assert attributes == params, f"{name} sets {sorted(attributes - params)} without a parameter"


@pytest.mark.parametrize("name", ["CNNClassifier", "FNNClassifier", "ResNet50Classifier", "PretrainedCXRClassifier"])
def test_generated_init_behaves_as_a_written_one(name):
    # keyword_only_init replaces four hand-written signatures: each keyword
    # is stored unchanged, defaults are the signature's, and Python's errors
    # for an unknown keyword or a positional argument name the class.
    import inspect

    from skxray.models._registry import CLASSIFIERS

    cls = CLASSIFIERS[name]
    signature = inspect.signature(cls)
    assert all(p.kind is p.KEYWORD_ONLY for p in signature.parameters.values())
    assert cls().get_params() == {n: p.default for n, p in signature.parameters.items()}
    marker = object()
    assert cls(lr=marker).lr is marker  # stored as given, not copied or checked
    with pytest.raises(TypeError, match=rf"{name}\.__init__\(\) got an unexpected keyword argument 'lrr'"):
        cls(lrr=1)
    with pytest.raises(TypeError, match=rf"{name}\.__init__\(\) takes 1 positional argument"):
        cls(1e-3)


@pytest.mark.parametrize("name", ["CNNClassifier", "FNNClassifier", "ResNet50Classifier", "PretrainedCXRClassifier"])
def test_docstring_defaults_are_the_signature_defaults(name):
    # The shared parameter docs are filled in from the class's own defaults;
    # a default changed in one place only would make the docs lie.
    import inspect
    import re

    from skxray.models._base import _doc_default
    from skxray.models._registry import CLASSIFIERS

    cls = CLASSIFIERS[name]
    documented = dict(re.findall(r"^    (\w+) : .*default=\"?([^\"\n]+)\"?$", cls.__doc__, re.M))
    defaults = {n: p.default for n, p in inspect.signature(cls).parameters.items()}
    for param in ("lr", "weight_decay", "dropout", "batch_size", "max_epochs", "optimizer", "image_size"):
        assert documented[param] == _doc_default(defaults[param]), param


#: Helpers whose one home is skxray/_utils.py: no other module defines them.
SHARED_HELPERS = {
    "_is_int",
    "_is_real",
    "_jsonable",
    "_json_default",
    "_format_value",
    "_png",
    "_check_fraction",
    "_check_labels",
    "_splitter",
    "_make_cv",
}

#: Copies allowed outside skxray/_utils.py: none.
ALLOWED_HELPER_COPIES = set()


def test_shared_helpers_have_one_home():
    copies = set()
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        file = path.relative_to(PACKAGE_DIR).as_posix()
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.FunctionDef) and node.name in SHARED_HELPERS:
                copies.add((file, node.name))
    assert copies == ALLOWED_HELPER_COPIES


# ----------------------------------------------------------------------------- issue 27: the CLI is a shell
#: The top of the layer map, highest first: the command line calls the
#: workflows, which lay out the report; the rest of the package (evaluation,
#: audit, ood, models, preprocessing, io) sits below them. A module may import
#: its own layer or one below it, never one above.
TOP_LAYERS = ("skxray.cli", "skxray.workflows", "skxray.report")


def _layer(module):
    return TOP_LAYERS.index(module) if module in TOP_LAYERS else len(TOP_LAYERS)


def _upward_imports(graph):
    return sorted((m, t) for m, targets in graph.items() for t in targets if _layer(t) < _layer(m))


def test_layer_check_sees_an_upward_import():
    assert _upward_imports({"skxray.report": {"skxray.workflows"}, "skxray.io": set()}) == [
        ("skxray.report", "skxray.workflows")
    ]
    assert _upward_imports({"skxray.cli": {"skxray.workflows", "skxray.io"}}) == []


def test_cli_workflows_report_import_only_downwards():
    graph = import_graph()
    assert set(TOP_LAYERS) <= set(graph)
    assert "skxray.workflows" in graph["skxray.cli"]
    assert _upward_imports(graph) == []


def _model_names():
    from skxray.models import classifier_names
    from skxray.models._registry import CLASSIFIERS

    return set(classifier_names()), set(CLASSIFIERS)


#: The modules that define the classifier classes.
CLASSIFIER_MODULES = tuple(f"skxray.models.{m}" for m in ("cnn", "fnn", "resnet", "xrv"))


def model_table_problems(source):
    """What in a module's source is a model table of its own.

    A string that is a model's short name (``"cnn"``) or a comma-joined list
    of them, or a classifier's class name, anywhere in the module; an import
    of a classifier class or of a classifier module.
    """
    short, classes = _model_names()
    problems = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            parts = {p.strip() for p in node.value.split(",")}
            if node.value in classes or (parts and parts <= short):
                problems.append(f"line {node.lineno}: the model name(s) {node.value!r}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith(CLASSIFIER_MODULES):
                problems.append(f"line {node.lineno}: imports from {node.module}")
            problems += [f"line {node.lineno}: imports {alias.name}" for alias in node.names if alias.name in classes]
    return problems


def test_model_table_check_sees_a_table():
    table = 'MODELS = ("cnn", "fnn")\nDEFAULT = "cnn,fnn,resnet50"\nfrom skxray.models import CNNClassifier\n'
    assert len(model_table_problems(table)) == 4  # two names, a list of names, a class
    assert model_table_problems("from skxray.models.resnet import PretrainedWeightsError\n") != []
    assert model_table_problems('HELP = "train a cnn model"\nfrom skxray.models import make_classifier\n') == []


def test_cli_holds_no_model_table():
    # The --model choices, the defaults and the classes come from the registry
    # (skxray.models.classifier_names / make_classifier) and the workflows.
    assert model_table_problems((PACKAGE_DIR / "cli.py").read_text(encoding="utf-8")) == []


#: Longest function of the command line: it parses, calls, prints.
MAX_CLI_FUNCTION_LINES = 40


def test_cli_functions_are_small_without_exemption():
    source = (PACKAGE_DIR / "cli.py").read_text(encoding="utf-8")
    assert LONG_FUNCTION_MARK not in source
    long_ones = [
        f"{name} ({length} lines)"
        for file, name, length, _ in _function_lengths()
        if file == "cli.py" and length > MAX_CLI_FUNCTION_LINES
    ]
    assert long_ones == []


def test_each_cli_command_calls_one_workflow():
    tree = ast.parse((PACKAGE_DIR / "cli.py").read_text(encoding="utf-8"))
    commands = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("cmd_")]
    assert len(commands) == 7
    for command in commands:
        calls = [
            n.func.attr
            for n in ast.walk(command)
            if isinstance(n, ast.Call)
            and isinstance(n.func, ast.Attribute)
            and isinstance(n.func.value, ast.Name)
            and n.func.value.id == "workflows"
        ]
        assert len(calls) == 1, (command.name, calls)


def test_cli_imports_nothing_inside_functions():
    # ``import skxray`` already loads torch and the models; skxray.workflows
    # defers its own plotting imports. An import inside a CLI function would
    # be work the CLI does itself.
    tree = ast.parse((PACKAGE_DIR / "cli.py").read_text(encoding="utf-8"))
    inner = [
        f"{func.name}: line {node.lineno}"
        for func in ast.walk(tree)
        if isinstance(func, ast.FunctionDef)
        for node in ast.walk(func)
        if isinstance(node, (ast.Import, ast.ImportFrom))
    ]
    assert inner == []
