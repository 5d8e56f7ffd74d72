"""What both the Consul source and the Consul registry need: the HTTP client (``client``)
and a service instance's JSON fields (``fields``). The registry itself, with its filter
expression, is ``daemon/registry/consul.py``; the source is ``discovery/sources/consul.py``.
"""
