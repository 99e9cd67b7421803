"""Cog: make and organize AI-generated image series."""

__version__ = "0.1.0"
