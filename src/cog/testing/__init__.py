"""Fakes that ship with Cog, for its tests and benchmarks."""
