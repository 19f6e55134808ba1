"""The package version, in a leaf module so that any module can read it without an import cycle."""

__version__ = "0.1.0.dev0"
