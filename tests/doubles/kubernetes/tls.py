"""The double's cluster CA and serving certificate, made afresh for every double.

A real API server speaks only HTTPS, and clients trust it through the cluster CA: the
kubeconfig's certificate-authority-data, or the service account's ca.crt in a pod.
trustme makes the CA and a certificate for 127.0.0.1 and localhost signed by it.
"""

from __future__ import annotations

import base64
import ssl

import trustme


class ClusterCA:
    def __init__(self) -> None:
        self._ca = trustme.CA(organization_name="capsync kubernetes double")
        self._leaf = self._ca.issue_cert("127.0.0.1", "localhost", "kubernetes.default.svc")

    @property
    def pem(self) -> bytes:
        """The CA certificate, as ca.crt holds it."""
        return self._ca.cert_pem.bytes()

    @property
    def data(self) -> str:
        return self.encode(self.pem)

    @staticmethod
    def encode(pem: bytes) -> str:
        """A CA certificate as a kubeconfig's certificate-authority-data (base64 PEM)."""
        return base64.b64encode(pem).decode()

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._leaf.configure_cert(context)
        return context
