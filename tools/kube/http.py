"""A tiny JSON client for the control plane's own needs (readiness, nodes, etcd), on the standard
library only, so that ``tools/kube-up`` runs with any Python that has ``cryptography`` and
``yaml``."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from typing import Any

from tools.kube.certs import Pair


class HTTPError(RuntimeError):
    """An answer other than 2xx; ``status`` is the HTTP status, ``body`` the parsed answer."""

    def __init__(self, method: str, url: str, status: int, body: Any) -> None:
        message = body.get("message") if isinstance(body, dict) else body
        super().__init__(f"{method} {url}: {status} {message}")
        self.status = status
        self.body = body


class Client:
    """JSON over HTTP(S) to one server; TLS verified against ``ca`` with a client ``identity``,
    or not verified at all (``ca=None``: the scheduler's and controller manager's self-signed
    health endpoints)."""

    def __init__(self, base: str, *, ca: Pair | None = None, identity: Pair | None = None) -> None:
        self.base = base.rstrip("/")
        self.context: ssl.SSLContext | None = None
        if base.startswith("https:"):
            if ca is None:
                self.context = ssl._create_unverified_context()
            else:
                self.context = ssl.create_default_context(cafile=str(ca.cert))
            if identity is not None:
                self.context.load_cert_chain(str(identity.cert), str(identity.key))

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        timeout: float = 10,
    ) -> Any:
        url = self.base + path
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=self.context) as answer:
                text = answer.read().decode()
        except urllib.error.HTTPError as error:
            text = error.read().decode(errors="replace")
            try:
                parsed: Any = json.loads(text)
            except ValueError:
                parsed = text
            raise HTTPError(method, url, error.code, parsed) from None
        try:
            return json.loads(text)
        except ValueError:
            return text

    def get(self, path: str, *, timeout: float = 10) -> Any:
        return self.request("GET", path, timeout=timeout)

    def post(self, path: str, body: Any) -> Any:
        return self.request("POST", path, body)

    def answers(self, path: str) -> bool:
        """True when ``GET path`` answers 2xx (connection errors and refusals are False)."""
        try:
            self.get(path, timeout=3)
        except (OSError, HTTPError):
            return False
        return True
