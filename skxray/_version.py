"""The package version, in a leaf module so that any module can read it without an import cycle."""

__version__ = "0.1.0.dev0"

#: Where the documentation is published (``docs/conf.py``'s ``html_baseurl``);
#: the classifiers' HTML representation links to their API pages under it.
DOCS_URL = "https://skxray.readthedocs.io/en/latest/"
