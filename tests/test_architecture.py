"""Rules about the code itself: no import cycle, no overly long function, one home per helper.

They read the source with :mod:`ast` (imports inside functions count too),
so they run in well under a second.
"""

import ast
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


def test_classifier_registry_names_the_library_classes():
    # For loading by class name without importing skxray.models back.
    from skxray.models import (
        CNNClassifier,
        FNNClassifier,
        PretrainedCXRClassifier,
        ResNet50Classifier,
        all_classifiers,
    )

    assert dict(all_classifiers()) == {
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
    from skxray.models import all_classifiers

    cls = dict(all_classifiers())[name]
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

    from skxray.models import all_classifiers

    cls = dict(all_classifiers())[name]
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

    from skxray.models import all_classifiers
    from skxray.models._base import _doc_default

    cls = dict(all_classifiers())[name]
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


# ----------------------------------------------------------------------------
# The HTML pages (issue 27): one module for their look, no module parsing
# another's HTML, the report's sections typed.

#: The one module that holds the pages' stylesheet, badge colours and inline styles.
HTML_LOOK_MODULE = "_html.py"
#: String methods that, called with a tag ("<h3"), take HTML apart.
_CUTTING_METHODS = {"find", "rfind", "index", "rindex", "split", "rsplit", "partition",
                    "rpartition", "count", "startswith", "endswith", "replace"}
_REGEX_FUNCTIONS = {"search", "match", "fullmatch", "findall", "finditer", "split", "sub",
                    "subn", "compile"}
_HTML_PARSERS = ("html.parser", "bs4", "lxml", "html5lib", "xml.etree", "xml.dom")


def _text_of(node):
    """The literal text of a str constant or an f-string's constant parts ("" otherwise)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(_text_of(v) for v in node.values)
    return ""


def html_parsing_in(source):
    """Where ``source`` reads HTML: ``(line, what)`` for each cut at a tag,
    regular expression over tags, ``"<tag" in text`` test or HTML parser import."""
    import re

    tag = re.compile(r"<[/!]?[a-zA-Z]")  # "<h3", "</div", "<!--": not "<=" or "<"
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
            first, name = _text_of(node.args[0]), node.func.attr
            if name in _CUTTING_METHODS and tag.match(first):
                found.append((node.lineno, f".{name}({first!r})"))
            elif (name in _REGEX_FUNCTIONS and isinstance(node.func.value, ast.Name)
                  and node.func.value.id == "re" and re.search(r"<\\?[/!]?[a-zA-Z]", first)):
                found.append((node.lineno, f"re.{name}({first!r})"))
        elif isinstance(node, ast.Compare) and tag.match(_text_of(node.left)):
            if any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops):
                found.append((node.lineno, f"{_text_of(node.left)!r} in ..."))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [(node.lineno, f"import {n}") for n in names if n.startswith(_HTML_PARSERS)]
    return found


def test_html_parsing_check_sees_a_cut():
    # The check below can fail: the cut that Report.add_audit once made, and others.
    source = (
        "import re\nfrom html.parser import HTMLParser\n"
        "def f(fragment):\n"
        "    cut = fragment.find('<h3')\n"
        "    parts = fragment.split(f'</section>')\n"
        "    heads = re.findall(r'<h2>(.*?)</h2>', fragment)\n"
        "    return '<details' in fragment\n"
    )
    assert [line for line, _ in html_parsing_in(source)] == [2, 4, 5, 6, 7]
    assert html_parsing_in("def f(t):\n    return t.split('<'), t.find('<='), '<' in t\n") == []


def test_no_module_parses_html():
    # A module that shows another's HTML gets it in pieces (skxray._html.Fragment,
    # e.g. AuditReport.html_sections) and lays them out; it never cuts HTML apart.
    found = [
        f"{path.relative_to(PACKAGE_DIR).as_posix()}:{line}: {what}"
        for path in sorted(PACKAGE_DIR.rglob("*.py"))
        for line, what in html_parsing_in(path.read_text(encoding="utf-8"))
    ]
    assert found == []


def page_look_in(source, colours):
    """Lines of ``source`` whose str constants hold a badge colour, a style attribute or element."""
    found = []
    for node in ast.walk(ast.parse(source)):
        text = _text_of(node) if isinstance(node, (ast.Constant, ast.JoinedStr)) else ""
        if any(c.lower() in text.lower() for c in colours) or "style=" in text or "<style" in text:
            found.append(node.lineno)
    return sorted(set(found))


def test_page_look_check_sees_a_second_badge():
    # The audit's own badge, as it once was: caught. A plot's colour is not the page's look.
    source = (
        "_COLOURS = {'ok': '#1A7F37'}\n"
        "def _badge(v):\n"
        "    return f'<span style=\"color:#fff;background:{_COLOURS[v]}\">{v}</span>'\n"
        "def plot(ax):\n"
        "    ax.plot([0, 1], color='#4c72b0', linestyle='--')\n"
    )
    assert page_look_in(source, ["#1a7f37"]) == [1, 3]


def test_page_look_is_defined_once():
    # The badge colours, the stylesheet and every inline style of skxray's
    # HTML live in skxray/_html.py; the report and the audit both use it.
    from skxray._html import BADGE_COLOURS

    elsewhere = {
        file: found
        for path in sorted(PACKAGE_DIR.rglob("*.py"))
        if (file := path.relative_to(PACKAGE_DIR).as_posix()) != HTML_LOOK_MODULE
        and (found := page_look_in(path.read_text(encoding="utf-8"), BADGE_COLOURS.values()))
    }
    assert elsewhere == {}
    badge_renderers = sorted(
        path.relative_to(PACKAGE_DIR).as_posix()
        for path in PACKAGE_DIR.rglob("*.py")
        for node in ast.parse(path.read_text(encoding="utf-8")).body
        if isinstance(node, ast.FunctionDef) and "badge" in node.name.lower()
    )
    assert badge_renderers == [HTML_LOOK_MODULE]


def test_html_look_module_imports_only_utils():
    # A leaf for the pages: the report and the audit may both import it.
    assert import_graph()["skxray._html"] <= {"skxray._utils"}


def test_report_sections_are_typed():
    # Report stores each section as a frozen Section, read by name (never s[3]).
    import dataclasses

    from skxray.audit import AuditReport, Finding
    from skxray.report import Report, Section

    report = (
        Report()
        .add_text("Aim", "x")
        .add_table("Split", {"train": 1})
        .add_metrics("CNN", {"accuracy": 0.5})
        .add_audit(AuditReport([Finding("leakage", "ok", "fine")]))
    )
    assert report._sections and all(isinstance(s, Section) for s in report._sections)
    assert dataclasses.is_dataclass(Section) and Section.__dataclass_params__.frozen
    with pytest.raises(dataclasses.FrozenInstanceError):
        report._sections[0].title = "changed"
    folded = {s.anchor: s.fold for s in report._sections}
    assert folded == {"aim": False, "split": False, "metrics-cnn": True,
                      "shortcut-and-leakage-audit": False}
    assert report.sections[1:] == [
        ("shortcut-and-leakage-audit", "Shortcut and leakage audit"), ("aim", "Aim"),
        ("split", "Split"), ("metrics-cnn", "Metrics: CNN"),
        ("software-versions", "Software versions"),
    ]


# ------------------------------------------- fit passes values; public benchmarks


def self_deletions(source):
    """``(line, attribute)`` of each ``del self.<attribute>`` / ``delattr(self, ...)`` in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Delete):
            for target in node.targets:
                targets = target.elts if isinstance(target, ast.Tuple) else [target]
                found += [
                    (node.lineno, t.attr)
                    for t in targets
                    if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self"
                ]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "delattr"
            and node.args
            and isinstance(node.args[0], ast.Name)
            and node.args[0].id == "self"
        ):
            found.append((node.lineno, ast.unparse(node.args[1]) if len(node.args) > 1 else "?"))
    return found


def test_self_deletions_are_seen():
    source = (
        "class A:\n"
        "    def fit(self):\n"
        "        self._a = self._b = 1\n"
        "        del self._a, self._b\n"
        "        delattr(self, '_c')\n"
        "        del other._d\n"
    )
    assert self_deletions(source) == [(4, "_a"), (4, "_b"), (5, "'_c'")]


def test_fit_sets_no_attribute_that_it_deletes_again():
    # fit's steps pass values (skxray/models/_fit_context.py: frozen run
    # settings and context in, a TrainedNet out), as skorch's hooks do; an
    # attribute set during fit only to be deleted again is state parked on
    # the estimator, which a subclass or a crash would see. Checked over the
    # whole package: no estimator needs ``del self.<name>``.
    found = [
        f"{path.relative_to(PACKAGE_DIR).as_posix()}:{line} deletes self.{name}"
        for path in sorted(PACKAGE_DIR.rglob("*.py"))
        for line, name in self_deletions(path.read_text(encoding="utf-8"))
    ]
    assert found == []


BENCHMARKS_DIR = PACKAGE_DIR.parent / "benchmarks"


def _is_private(part):
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


def _dotted(node):
    """``a.b.c`` of an attribute chain on a name, or None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return ".".join([node.id, *reversed(parts)]) if isinstance(node, ast.Name) else None


def private_skxray_names(source):
    """``(line, name)`` of each private skxray module or name ``source`` imports or reads.

    ``import skxray._x``, ``from skxray.y._x import z``, ``from skxray.y import _z``
    and ``skxray._x.z`` all count: any component after ``skxray`` that starts
    with ``_`` (dunders such as ``__version__`` excepted).
    """
    tree = ast.parse(source)
    # Only whole chains: ``skxray._data._array_bytes``, not also ``skxray._data``.
    inner = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Attribute) and id(node) not in inner:
            names = [_dotted(node) or ""]
        else:
            continue
        found += [
            (node.lineno, name)
            for name in names
            if name.split(".")[0] == "skxray" and any(_is_private(p) for p in name.split(".")[1:])
        ]
    return sorted(set(found))


def test_private_skxray_names_are_seen():
    source = (
        "import skxray\n"
        "import skxray._data\n"
        "from skxray.audit._cv import lung_masked\n"
        "from skxray.ood import _Source, shift_test\n"
        "from skxray import audit\n"
        "import _common\n"
        "from _common import log\n"
        "v = skxray.__version__\n"
        "f = skxray._utils.jsonable\n"
    )
    assert private_skxray_names(source) == [
        (2, "skxray._data"),
        (3, "skxray.audit._cv.lung_masked"),
        (4, "skxray.ood._Source"),
        (9, "skxray._utils.jsonable"),
    ]


def test_benchmarks_import_only_public_skxray_names():
    # The benchmarks measure the library as a user runs it: what they need
    # is public (documented in a module's __all__) or their own
    # (benchmarks/_common.py). A private name may change without notice.
    found = [
        f"benchmarks/{path.name}:{line} {name}"
        for path in sorted(BENCHMARKS_DIR.glob("*.py"))
        for line, name in private_skxray_names(path.read_text(encoding="utf-8"))
    ]
    assert found == []


# ---------------------------------------------------------------------------
# Issue 27a: the report draws through the displays of skxray.evaluation

#: Modules whose import would let the report compute a metric itself.
METRIC_MODULES = ("sklearn.metrics", "sklearn.calibration")
#: Functions (of scikit-learn or skxray.evaluation) that compute a metric or
#: a curve; the report asks a display, or takes their results.
METRIC_FUNCTIONS = {
    "accuracy_score", "auc", "average_precision_score", "balanced_accuracy_score",
    "brier_score_loss", "calibration_curve", "classification_metrics", "confusion_matrix",
    "evaluate", "precision_recall_curve", "roc_auc_score", "roc_curve", "argmax", "argmin",
    "external_validation", "external_validation_from_predictions",
}


def metric_computations(source):
    """``["<line>: <what>"]`` for each metric import or metric call in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(METRIC_MODULES):
            found.append(f"{node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Import):
            found += [f"{node.lineno}: import {a.name}" for a in node.names
                      if a.name.startswith(METRIC_MODULES)]
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in METRIC_FUNCTIONS:
                found.append(f"{node.lineno}: {name}()")
    return found


def test_metric_computations_sees_the_old_report_code():
    old = (
        "from sklearn.metrics import roc_auc_score, roc_curve\n"
        "def add_cv_figures(self, y, p):\n"
        "    fpr, tpr, _ = roc_curve(y, p[:, 0])\n"
        "    return classes[p.argmax(axis=1)]\n"
    )
    assert metric_computations(old) == [
        "1: from sklearn.metrics import ...", "3: roc_curve()", "4: argmax()"]


def test_report_computes_no_metric():
    source = (PACKAGE_DIR / "report.py").read_text(encoding="utf-8")
    assert metric_computations(source) == [], (
        "report.py computes a metric: draw through a display of skxray.evaluation "
        "(RocCurvesDisplay, ...) or take the caller's results."
    )


#: Longest body (docstring excluded) of a plot function of skxray.evaluation.
MAX_PLOT_WRAPPER_LINES = 15


def test_plot_functions_are_thin_wrappers_over_displays():
    import skxray.evaluation

    public_plots = sorted(n for n in skxray.evaluation.__all__ if n.startswith("plot_"))
    found = {}
    for path in sorted((PACKAGE_DIR / "evaluation").glob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.FunctionDef) and node.name in public_plots:
                body = node.body[1:] if isinstance(node.body[0], ast.Expr) else node.body
                names = {n.id for b in body for n in ast.walk(b) if isinstance(n, ast.Name)}
                found[node.name] = (
                    body[-1].end_lineno - body[0].lineno + 1,
                    any(n.endswith("Display") for n in names),
                )
    assert sorted(found) == public_plots
    fat = {n: lines for n, (lines, _) in found.items() if lines > MAX_PLOT_WRAPPER_LINES}
    assert fat == {}, "a plot function draws itself: move the drawing into its display"
    assert [n for n, (_, uses) in found.items() if not uses] == []


# ---------------------------------------------------------------------------
# Issue 27f: every figure of the report and of the audit's page is a display

#: Calls that make a figure or axes, or draw data on axes: only a display's
#: methods may call them in the page modules. Labelling a display's axes
#: afterwards (``disp.ax_.set(title=...)``, ``legend``, ``grid``) is not
#: drawing: scikit-learn's examples do it too.
DRAWING_CALLS = {
    "Figure", "figure", "subplots", "add_subplot", "add_axes", "subplot_mosaic",
    "plot", "bar", "barh", "hist", "hist2d", "imshow", "matshow", "pcolormesh", "contour",
    "contourf", "scatter", "axhline", "axvline", "axhspan", "axvspan", "axline", "fill_between",
    "fill_betweenx", "errorbar", "step", "stairs", "pie", "boxplot", "violinplot", "annotate",
    "text", "arrow", "quiver",
}
#: The modules that lay out pages: they draw through displays only.
PAGE_MODULES = ("report.py", "audit/_report.py")


def hand_drawing_in(source):
    """``["<line>: <call>()"]`` for each drawing call of ``source`` outside a ``*Display`` class.

    Docstrings (the doctest examples) are text, not calls, so they are not seen.
    """
    found = []

    def visit(node):
        if isinstance(node, ast.ClassDef) and node.name.endswith("Display"):
            return
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in DRAWING_CALLS:
                found.append(f"{node.lineno}: {name}()")
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [getattr(node, "module", None) or ""] + [a.name for a in node.names]
            if any(n.startswith("matplotlib.pyplot") or n == "pyplot" for n in names):
                found.append(f"{node.lineno}: import pyplot")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source))
    return found


def test_hand_drawing_check_sees_the_old_page_code():
    old = (
        '"""A page.\n\n>>> fig = Figure(); _ = fig.subplots().plot([0, 1])\n"""\n'
        "from matplotlib.figure import Figure\n"
        "def _plot_calibration(finding):\n"
        "    fig = Figure(figsize=(3.4, 3.2))\n"
        "    ax = fig.add_subplot()\n"
        "    ax.plot([0, 1], [0, 1], 'k--')\n"
        "    ax_h, ax_w = fig.subplots(1, 2)\n"
        "    ax_h.hist([1, 2], bins=20)\n"
        "    return RocCurvesDisplay.from_predictions(y, p).figure_\n"
        "class ImageSizesDisplay:\n"
        "    def plot(self, ax=None):\n"
        "        ax.hist(self.heights)\n"
    )
    assert hand_drawing_in(old) == [
        "7: Figure()", "8: add_subplot()", "9: plot()", "10: subplots()", "11: hist()"]
    assert hand_drawing_in("import matplotlib.pyplot as plt\n") == ["1: import pyplot"]


@pytest.mark.parametrize("module", PAGE_MODULES)
def test_pages_draw_only_through_displays(module):
    source = (PACKAGE_DIR / module).read_text(encoding="utf-8")
    assert hand_drawing_in(source) == [], (
        f"{module} draws a figure by hand: make it a display (from_* computes once, "
        "plot(ax=None) draws) of skxray.evaluation or of the module that owns the data."
    )


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
    from skxray.models import all_classifiers, classifier_names

    return set(classifier_names()), set(dict(all_classifiers()))


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


# ----------------------------------------------- tests import public names
#: The only private skxray names a test file may import: the unit tests of
#: the private module that owns them (or of the check itself). Every other
#: test goes through the public API, so that it keeps passing while the
#: internals change, and it says what users can rely on. An entry is the
#: dotted name up to its first private part (``skxray.models._resume`` for
#: ``from skxray.models._resume import read_state``). The table only shrinks:
#: an entry no longer imported fails too.
PRIVATE_UNDER_TEST = {
    "_helpers.py": ({"skxray.models._resume"},
                    "interrupt_after_epoch stops a fit right after the resume callback wrote last.pt"),
    "test_architecture.py": ({"skxray._html", "skxray._param_validation", "skxray.models._base"},
                             "the architecture checks: one badge palette, the vendored validation, "
                             "parameter docs generated from the defaults"),
    "test_augmentation.py": ({"skxray._param_validation"}, "the unit tests of the Pair constraint"),
    "test_bad_inputs.py": ({"skxray.models._persistence"}, "a full disk while the persistence module writes"),
    "test_batch_iterator.py": ({"skxray._data", "skxray.models._base"},
                               "the unit tests of the batch iterator, datasets and augmenting collate"),
    "test_case_mix.py": ({"skxray._label_shift", "skxray.ood._mmd_permutation_test",
                          "skxray.ood._mmd_permutation_test_across_patients"},
                         "the unit tests of the label-shift estimators and of the two MMD statistics"),
    "test_distributed.py": ({"skxray.models._base"}, "emulates a secondary process, which must not save"),
    "test_distributed_predict.py": ({"skxray._dask_plugin", "skxray.dask._assemble", "skxray.ood._MAX_SHIFT_SAMPLES"},
                                    "the unit tests of the dask worker plugin and assembly; "
                                    "the public image cap equals the OOD test's own"),
    "test_evaluation.py": ({"skxray.evaluation._curves"},
                           "a display redraws without calling its module's metric functions"),
    "test_hardening.py": ({"skxray._atomic", "skxray.models._feature_store", "skxray.models._resume",
                           "skxray.models._persistence"},
                          "the unit tests of atomic writes, the feature store, resume state and the saved format"),
    "test_model_conventions.py": ({"skxray.models._base"}, "spies on the private fit steps of the base class"),
    "test_models.py": ({"skxray.models.resnet._ResNet50Net", "skxray.models.resnet._extract_features",
                        "skxray._data"},
                       "counts the ResNet backbone's passes to prove cached features are not recomputed; "
                       "compares the feature extraction through the batch iterator with the old DataLoader's"),
    "test_ood.py": ({"skxray.ood._logit_scores", "skxray.ood._median_bandwidth",
                     "skxray.ood._mmd_permutation_test", "skxray.ood._threshold"},
                    "the unit tests of the detector's scores, threshold and MMD test"),
    "test_precision.py": ({"skxray.models._precision"},
                          "the unit tests of amp='auto''s probe: a fake clock, its cache and its margin"),
    "test_resume.py": ({"skxray.models._resume"}, "the unit tests of the resume state file"),
    "test_scale.py": ({"skxray.models._base", "skxray.models._distributed", "skxray.models._resume"},
                      "the unit tests of the training net and accelerator choice; emulated bfloat16 "
                      "and interrupted fits"),
    "test_workflows.py": ({"skxray.models._registry"}, "runs the doctests of the module defining make_classifier"),
    "test_xrv.py": ({"skxray.models.xrv._XRVNet", "skxray.models.xrv._import_xrv"},
                    "counts the backbone's passes; torchxrayvision's import leaves warnings on"),
}


def private_skxray_imports(source):
    """The private skxray names ``source`` imports, each up to its first private part."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            dotted = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            dotted = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in dotted:
            parts = name.split(".")
            private = [i for i, part in enumerate(parts) if part.startswith("_") and not part.startswith("__")]
            if parts[0] == "skxray" and private:
                found.add(".".join(parts[: private[0] + 1]))
    return found


def test_tests_import_private_names_only_as_listed():
    # A test may reach into a private module only as its unit test, listed
    # (with why) in PRIVATE_UNDER_TEST; an entry no longer used must go.
    tests = Path(__file__).parent
    used = {path.name: private_skxray_imports(path.read_text(encoding="utf-8")) for path in sorted(tests.glob("*.py"))}
    unlisted = {name: sorted(found - PRIVATE_UNDER_TEST.get(name, (set(), ""))[0])
                for name, found in used.items()}
    assert {name: found for name, found in unlisted.items() if found} == {}
    stale = {name: sorted(listed - used.get(name, set())) for name, (listed, _) in PRIVATE_UNDER_TEST.items()}
    assert {name: names for name, names in stale.items() if names} == {}
    assert all(why for _, why in PRIVATE_UNDER_TEST.values())


def test_private_import_scan_catches_each_form():
    source = "\n".join([
        "from skxray._x import y",
        "import skxray.a._b",
        "from skxray.a import _c",
        "from skxray.a._d import _e",
        "import skxray.models as m, skxray._f.g",
        "from skxray.models import CNNClassifier, load",
        "from skxray import __version__",
        "from ._local import x",
        "import _helpers",
        "from sklearn.utils import _param_validation",
    ])
    assert private_skxray_imports(source) == {"skxray._x", "skxray.a._b", "skxray.a._c", "skxray.a._d", "skxray._f"}
