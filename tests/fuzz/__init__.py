"""The fuzz harness (:mod:`tests.fuzz.harness`) and its seed corpus (``tests/fuzz/corpus/<target>/``)."""
