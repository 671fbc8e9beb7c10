"""Experiments built from the engine and the analysis library."""
