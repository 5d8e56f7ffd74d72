"""The daemon: plan, registries, the sync cycle, the CLI and its HTTP endpoints."""
