"""A faithful, in-process double of the Consul agent HTTP API that capsync uses.

Contract: /work/shared/design/CONSUL-API.md. See `ConsulDouble`.
"""

from .double import ConsulDouble

__all__ = ["ConsulDouble"]
