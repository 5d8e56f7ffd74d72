"""Registries: where capsync keeps the entries (Consul; SQLite as the embedded default)."""
