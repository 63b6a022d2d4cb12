"""Strata's HTTP service (FastAPI); see :mod:`server.main`. Needs the ``serve`` extra."""
