"""rucio-clients' ``Client`` with the token kept in memory, and the identity it acts as.

rucio-clients caches tokens in files under ``$TMPDIR`` per local user and account (not per
server), and looks for OIDC tokens in process-wide environment variables. Neither fits a hub
that talks to Rucio for many users at once: :func:`make_client` builds a client that fetches
(userpass) or is given (token) its token and keeps it on the instance only.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_client_log = logging.getLogger("esap_spawner.data.catalogue.rucio.client")


@dataclass(frozen=True)
class RucioIdentity:
    """Who the catalogue talks to Rucio as.

    Either ``userpass`` (a service account: username and password, the password read from a
    file or an environment variable at the moment a token is needed) or ``token`` (a Rucio
    auth token or an OIDC access token with audience ``rucio``, e.g. the user's token from
    JupyterHub's ``auth_state``).
    """

    account: str
    auth_type: str  # "userpass" | "token"
    username: str | None = None
    password: str | None = None
    password_file: str | None = None
    password_env: str | None = None
    token: str | None = None
    token_file: str | None = None

    @classmethod
    def userpass(
        cls,
        account: str,
        *,
        username: str,
        password: str | None = None,
        password_file: str | None = None,
        password_env: str | None = None,
    ) -> RucioIdentity:
        if sum(x is not None for x in (password, password_file, password_env)) != 1:
            raise ValueError("userpass needs exactly one of password, password_file, password_env")
        return cls(
            account=account,
            auth_type="userpass",
            username=username,
            password=password,
            password_file=password_file,
            password_env=password_env,
        )

    @classmethod
    def with_token(
        cls, account: str, *, token: str | None = None, token_file: str | None = None
    ) -> RucioIdentity:
        if (token is None) == (token_file is None):
            raise ValueError("a token identity needs exactly one of token, token_file")
        return cls(account=account, auth_type="token", token=token, token_file=token_file)

    def resolve_password(self) -> str:
        if self.password is not None:
            return self.password
        if self.password_file is not None:
            try:
                return Path(self.password_file).read_text().strip()
            except OSError as exc:
                raise ValueError(
                    f"cannot read the Rucio password file {self.password_file!r}: {exc.strerror}"
                ) from exc
        if self.password_env is not None:
            value = os.environ.get(self.password_env)
            if not value:
                raise ValueError(
                    f"the environment variable {self.password_env} (Rucio password) is not set"
                )
            return value
        raise ValueError(f"no password configured for Rucio account {self.account!r}")

    def resolve_token(self) -> str:
        if self.token is not None:
            return self.token
        if self.token_file is not None:
            try:
                return Path(self.token_file).read_text().strip()
            except OSError as exc:
                raise ValueError(
                    f"cannot read the Rucio token file {self.token_file!r}: {exc.strerror}"
                ) from exc
        raise ValueError(f"no token configured for Rucio account {self.account!r}")

    def __repr__(self) -> str:  # never print secrets
        return f"RucioIdentity(account={self.account!r}, auth_type={self.auth_type!r})"


def make_client(
    host: str,
    auth_host: str,
    identity: RucioIdentity,
    *,
    timeout: int = 30,
    vo: str | None = None,
    ca_cert: str | None = None,
) -> Any:
    """A ``rucio.client.Client`` that keeps its token in memory only.

    rucio-clients caches tokens in files under ``$TMPDIR`` per local user and account (not per
    server), and finds OIDC tokens in process-wide environment variables. Neither fits a hub
    that talks to Rucio for many users at once, so this subclass overrides the client's token
    read/write (name-mangled private methods of ``BaseClient``, checked against
    rucio-clients 41.5.1 by the integration tests): userpass fetches a token from the server
    and keeps it on the instance; a token identity uses the given token and, when the server
    refuses it, fails with ``CannotAuthenticate`` instead of starting an interactive login.
    """
    try:
        from rucio.client import Client
        from rucio.common.exception import CannotAuthenticate
    except ImportError as exc:
        raise RuntimeError(
            "the Rucio catalogue needs rucio-clients: pip install 'esap-spawner[rucio]'"
        ) from exc

    preset = identity.resolve_token() if identity.auth_type == "token" else None

    class _InMemoryTokenClient(Client):
        def _BaseClient__read_token(self) -> bool:
            if preset is None:
                return False
            self.auth_token = preset
            self.headers["X-Rucio-Auth-Token"] = preset
            return True

        def _BaseClient__write_token(self) -> None:
            return None

        if preset is not None:

            def _BaseClient__get_token(self) -> None:
                raise CannotAuthenticate(
                    f"Rucio refused the token for account {identity.account!r} "
                    "(expired or not valid for this server)"
                )

    argv0 = sys.argv[0] if sys.argv else None
    try:
        return _construct(_InMemoryTokenClient, host, auth_host, identity, timeout, vo, ca_cert)
    finally:
        if argv0 is not None:  # rucio-clients' BaseClient shortens sys.argv[0] in place
            sys.argv[0] = argv0


def _construct(
    client_class: Any,
    host: str,
    auth_host: str,
    identity: RucioIdentity,
    timeout: int,
    vo: str | None,
    ca_cert: str | None,
) -> Any:
    if identity.auth_type == "userpass":
        return client_class(
            rucio_host=host,
            auth_host=auth_host,
            account=identity.account,
            auth_type="userpass",
            creds={"username": identity.username, "password": identity.resolve_password()},
            timeout=timeout,
            vo=vo,
            ca_cert=ca_cert,
            logger=_client_log,
        )
    if identity.auth_type == "token":
        return client_class(
            rucio_host=host,
            auth_host=auth_host,
            account=identity.account,
            auth_type="oidc",
            creds={},
            timeout=timeout,
            vo=vo,
            ca_cert=ca_cert,
            logger=_client_log,
        )
    raise ValueError(f"unsupported Rucio auth_type {identity.auth_type!r}")
