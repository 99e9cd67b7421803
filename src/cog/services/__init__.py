"""Use cases. The web layer and the CLI both call these; neither issues queries itself."""
