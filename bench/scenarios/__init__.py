"""The benchmarks, one module per group; each scenario starts nothing itself (its stacks are
started for it, see bench/__main__.py) and returns its figures."""
