"""The web layer: the JSON API and the pages. Thin: it parses, calls a service, renders."""
