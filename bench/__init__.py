"""Benchmarks: each learnstream stage beside the raw library doing the same work, one run."""
