"""The one place the version is written: `tlc.__version__`, pyproject and the registry read it."""
__version__ = "0.1.0"
