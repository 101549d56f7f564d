"""Open Inference Protocol (KServe V2 / Triton HTTP) for raydio's tensor models.

Layered as in KServe: ``types`` are the wire documents, ``tensors`` turns them into numpy arrays and
back (JSON and the binary tensor extension), ``dataplane`` maps tensors onto the core's model calls.
The HTTP router (``services.ingress.routes.v2``) only frames bodies and headers.
"""
