"""Strata: learned image and audio compression with residual vector quantizers.

The serving path needs numpy, onnxruntime and constriction only; torch is used
by ``codec.train`` and ``codec.export``.
"""

__version__ = "0.1.0"
