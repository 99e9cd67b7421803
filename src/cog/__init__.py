"""Cog: make and organize AI-generated image series."""
