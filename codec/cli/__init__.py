"""The ``strata`` command line (:func:`main`); see :mod:`strata.cli.main`."""

from strata.cli.main import get_parser, main

__all__ = ["get_parser", "main"]
