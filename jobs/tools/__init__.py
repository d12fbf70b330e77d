"""Standalone tools that need no pipeline run: ``nr dedup``, ``nr decontaminate``, ``nr benchmarks``."""
