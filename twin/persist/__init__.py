"""Persistence: the versioned twin store, stored sessions, model files, atomic writes."""
