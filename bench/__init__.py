"""Benchmarks: agent-runner against raw Temporal client calls and the seed's in-memory design."""
