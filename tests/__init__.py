"""The test suite, a package: `tests.fixtures` must never resolve to another project's `tests`."""
