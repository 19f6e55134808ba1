"""Sphinx configuration of the skxray documentation.

Build with ``make docs`` (``sphinx-build -W --keep-going -b html docs
docs/_build/html``). The build needs no network: no intersphinx, and the
theme's assets are bundled with it. Generated files (``docs/api/generated/``,
``docs/_generated_*.rst``) are written by every build and are git-ignored.
"""

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
# The package is installed in editable mode by `make setup`; this makes a
# build from a plain checkout work as well.
sys.path.insert(0, str(HERE.parent))

# Headless plotting while autodoc imports the package.
os.environ.setdefault("MPLBACKEND", "Agg")

import skxray  # noqa: E402
from skxray._version import DOCS_URL  # noqa: E402

# -- Project -----------------------------------------------------------------

project = "skxray"
author = "The skxray developers"
copyright = "The skxray developers"  # noqa: A001
release = skxray.__version__
version = ".".join(release.split(".")[:2])

# -- General -----------------------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "skxray_docgen",  # docs/_ext: API tables, CLI help, benchmark tables
]

# -- Examples gallery -----------------------------------------------------------
# examples/plot_*.py run on phantoms at build time (seconds each; outputs are
# cached between builds) and become docs/auto_examples/. Each API page lists
# the examples that use it (backreferences, the "minigallery" of the class
# template). Without sphinx-gallery (pip install -e ".[docs]") the gallery is
# replaced by a page saying so, and the build still passes.
try:
    import sphinx_gallery  # noqa: F401
except ImportError:
    HAVE_GALLERY = False
    _stub = HERE / "auto_examples" / "index.rst"
    _stub.parent.mkdir(exist_ok=True)
    _stub.write_text(
        "Examples\n========\n\nThe examples gallery is built with sphinx-gallery, which is not "
        "installed here: ``pip install -e \".[docs]\"``. The scripts are in ``examples/``.\n",
        encoding="utf-8",
    )
else:
    HAVE_GALLERY = True
    extensions.append("sphinx_gallery.gen_gallery")
    sphinx_gallery_conf = {
        "examples_dirs": str(HERE.parent / "examples"),
        "gallery_dirs": str(HERE / "auto_examples"),
        "filename_pattern": r"/plot_",
        "doc_module": ("skxray",),
        "backreferences_dir": str(HERE / "api" / "generated" / "backreferences"),
        "reference_url": {"skxray": None},
        "download_all_examples": False,
        "remove_config_comments": True,
        "within_subsection_order": "FileNameSortKey",
        "show_memory": False,
        "show_signature": False,
        "write_computation_times": False,
    }

templates_path = ["_templates"]
# The _generated_*.rst files are pieces included by other pages, not pages.
exclude_patterns = ["_build", "_generated_*.rst", "Thumbs.db", ".DS_Store"]
root_doc = "index"
default_role = "py:obj"

# autosummary writes one page per public name into api/generated/.
autosummary_generate = True
autosummary_generate_overwrite = True
autosummary_imported_members = False

autodoc_default_options = {"member-order": "groupwise"}
autodoc_typehints = "none"  # numpydoc docstrings carry the types

# numpydoc renders the "Parameters", "Returns", ... sections. Members are
# listed by the class template (docs/_templates/autosummary/class.rst), so
# numpydoc must not add its own member tables or toctrees.
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_show_inherited_class_members = False
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = False

# No intersphinx: the build machine is offline.

# -- HTML --------------------------------------------------------------------

html_theme = "pydata_sphinx_theme"
html_title = f"skxray {release}"
html_static_path = []
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "navbar_align": "left",
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_sidebars = {
    "index": [],
    "changelog": [],
}
html_show_sourcelink = False
# Where the pages are published; the classifiers' HTML representation links
# to their API pages under it (skxray._version.DOCS_URL, one definition).
html_baseurl = DOCS_URL


# -- Members shown on the class pages -----------------------------------------


def _defined_in_skxray(obj):
    """Whether a class member comes from skxray (not sklearn, torch or builtins)."""
    for candidate in (obj, getattr(obj, "fget", None), getattr(obj, "__func__", None)):
        module = getattr(candidate, "__module__", None)
        if isinstance(module, str):
            return module == "skxray" or module.startswith("skxray.")
    return False


def _skip_foreign_members(app, what, name, obj, skip, options):
    # The class template asks for inherited members so that fit, predict,
    # transform, save, ... (defined in skxray's base classes) are documented.
    # Members inherited from scikit-learn (get_params, set_output, the
    # metadata-routing set_*_request methods, ...) and from builtins are left
    # to their own documentation: their docstrings refer to labels of the
    # scikit-learn site, which do not exist here.
    if what == "class" and not _defined_in_skxray(obj):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_foreign_members)
    if not HAVE_GALLERY:
        # The class template lists examples with "minigallery"; without
        # sphinx-gallery that directive shows nothing.
        from docutils.parsers.rst import Directive

        class _NoMiniGallery(Directive):
            optional_arguments = 10
            final_argument_whitespace = True
            has_content = True
            option_spec = {"add-heading": lambda x: x, "heading-level": lambda x: x}

            def run(self):
                return []

        app.add_directive("minigallery", _NoMiniGallery)
