"""GitHub credentials: a token, or a GitHub App acting as its installations; one client each."""

from __future__ import annotations

import math
import threading
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from github import Auth, Github, GithubIntegration

from bot.forge.base import RepoRef
from bot.forge.github_values import PER_PAGE, split_full_name


class GitHubClients:
    """PyGithub clients per credential: the token's, or one per app installation."""

    def __init__(
        self,
        *,
        base_url: str,
        token: str | None,
        app_id: int | None,
        private_key: str | None,
        installation_id: int | None,
        timeout_s: float,
    ) -> None:
        if token and (app_id is not None or private_key):
            raise ValueError("give either a token or a GitHub App (app_id, private_key), not both")
        if not token and (app_id is None or not private_key):
            raise ValueError("GitHub needs a token, or an app_id with its private_key")
        if installation_id is not None and (token or installation_id <= 0):
            raise ValueError("installation_id must be a positive id, and only with a GitHub App")
        if private_key:
            _check_private_key(private_key)
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self._base_url = base_url.rstrip("/")
        self.token = token or None
        self.app_auth = (
            Auth.AppAuth(app_id, private_key) if app_id is not None and private_key else None
        )
        self._installation_id = installation_id
        # PyGithub only takes whole seconds.
        self._timeout = max(1, math.ceil(timeout_s))
        self._lock = threading.Lock()
        self._clients: dict[int | None, Github] = {}
        self._installation_auths: dict[int, Auth.AppInstallationAuth] = {}
        self._repo_installations: dict[str, int] = {}

    def options(self) -> dict[str, Any]:
        return {
            "base_url": self._base_url,
            "timeout": self._timeout,
            "per_page": PER_PAGE,
            "user_agent": "sluice",
            "retry": None,
            "seconds_between_requests": None,
            "seconds_between_writes": None,
            "lazy": True,
        }

    def integration(self) -> GithubIntegration:
        assert self.app_auth is not None
        return GithubIntegration(auth=self.app_auth, **self.options())

    def client(self, repo: RepoRef | None) -> Github:
        if self.app_auth is None:
            key = None
        elif repo is None:
            raise AssertionError("an app client needs a repository")
        else:
            key = self.installation_for(repo)
        with self._lock:
            client = self._clients.get(key)
        if client is not None:
            return client
        if key is None:
            auth: Auth.Auth = Auth.Token(self.token or "")
        else:
            auth = self.installation_auth(key)
        client = Github(auth=auth, **self.options())
        with self._lock:
            return self._clients.setdefault(key, client)

    def installation_auth(self, installation_id: int) -> Auth.AppInstallationAuth:
        assert self.app_auth is not None
        with self._lock:
            auth = self._installation_auths.get(installation_id)
            if auth is None:
                auth = self.app_auth.get_installation_auth(
                    installation_id, requester=self.integration().requester
                )
                self._installation_auths[installation_id] = auth
            return auth

    def installation_for(self, repo: RepoRef) -> int:
        if self._installation_id is not None:
            return self._installation_id
        with self._lock:
            known = self._repo_installations.get(repo.full_name)
        if known is not None:
            return known
        owner, name = split_full_name(repo)
        installation = self.integration().get_repo_installation(owner, name)
        with self._lock:
            self._repo_installations[repo.full_name] = installation.id
        return installation.id


def _check_private_key(pem: str) -> None:
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # The parser's message could quote key material: keep it out.
        raise ValueError("private_key is not an unencrypted PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("a GitHub App private key must be an RSA key")
