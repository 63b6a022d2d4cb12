"""Strata's HTTP service (FastAPI); see :mod:`strata.server.main`. Needs the ``serve`` extra."""
