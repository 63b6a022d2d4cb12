"""The shipped models (package data): ``manifest.json`` and one folder of ONNX graphs,
codebooks and priors per model. :func:`strata.registry.default_models_dir` finds this
folder after a wheel install as in a source checkout; ``STRATA_MODELS`` points elsewhere.
"""
