"""Protocols: studies made of several ordinary training runs (cross-domain matrices, ...)."""
