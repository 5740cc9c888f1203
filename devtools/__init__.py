"""Development tooling: the processes `make run`, the tests and the benchmarks start. Not part
of the runtime package, and not in the Docker image."""
