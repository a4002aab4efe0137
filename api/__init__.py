"""The HTTP edge: routes, upload validation, decoding pool, response cache. Never imports torch."""
