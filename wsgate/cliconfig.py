"""What `wsgate mg` remembers between runs: environments, tokens, trusted certificates.

Everything lives under ``$WSGATE_CLI_HOME`` (default ``~/.wsgate``): ``config.yaml`` holds the
environments and the tokens, so it is written with mode 0600; ``certs/*.pem`` are extra CA
certificates to trust, like apictl's ``~/.wso2apictl/certs``.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic_settings import SettingsConfigDict

from wsgate_common import documents
from wsgate_common.settings import CommonSettings

CONFIG_FILE = "config.yaml"
EXPIRY_SLACK_SECONDS = 5


class CliError(Exception):
    """A failure shown to the user as ``Error: <message> (<description>)``, exit status 1."""

    def __init__(self, message: str, description: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.description = description
        self.status = status  # the HTTP status behind it, when there was one

    def line(self) -> str:
        if self.description:
            return f"Error: {self.message} ({self.description})"
        return f"Error: {self.message}"


class CliSettings(CommonSettings):
    """``WSGATE_CLI_HOME`` and the data dir (whose local CA the CLI trusts when present)."""

    model_config = SettingsConfigDict(env_prefix="WSGATE_", extra="ignore")

    cli_home: Path = Path.home() / ".wsgate"


@dataclass
class Token:
    access_token: str
    username: str
    obtained_at: float

    def expires_at(self) -> float | None:
        """The ``exp`` claim when the token is a JWT, read without verifying (display only)."""
        return jwt_expiry(self.access_token)

    def expired(self, now: float | None = None) -> bool:
        exp = self.expires_at()
        current = time.time() if now is None else now
        return exp is not None and exp <= current + EXPIRY_SLACK_SECONDS


@dataclass
class Config:
    envs: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, Token] = field(default_factory=dict)
    #: env -> absolute path of a CA certificate to trust for its adapter (``add env --ca``, or
    #: the local CA found when the env was added), so it is trusted from any directory.
    cas: dict[str, str] = field(default_factory=dict)

    def _env(self, name: str, url: str) -> dict[str, str]:
        spec = {"adapter": url}
        if name in self.cas:
            spec["ca"] = self.cas[name]
        return spec

    def to_dict(self) -> dict[str, Any]:
        return {
            "environments": {name: self._env(name, url) for name, url in sorted(self.envs.items())},
            "tokens": {
                name: {
                    "accessToken": tok.access_token,
                    "username": tok.username,
                    "obtainedAt": tok.obtained_at,
                }
                for name, tok in sorted(self.tokens.items())
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        envs = {
            str(name): str(spec["adapter"])
            for name, spec in (data.get("environments") or {}).items()
        }
        cas = {
            str(name): str(spec["ca"])
            for name, spec in (data.get("environments") or {}).items()
            if spec.get("ca")
        }
        tokens = {
            str(name): Token(
                str(spec["accessToken"]), str(spec.get("username", "")), float(spec["obtainedAt"])
            )
            for name, spec in (data.get("tokens") or {}).items()
        }
        return cls(envs, tokens, cas)


def jwt_expiry(token: str) -> float | None:
    """Read ``exp`` from a JWT payload; None when the token is opaque or has no ``exp``."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    padded = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(padded))
    except (binascii.Error, ValueError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) else None


class Store:
    """Loads and saves :class:`Config` under one CLI home directory."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.path = home / CONFIG_FILE

    def load(self) -> Config:
        if not self.path.exists():
            return Config()
        try:
            data = documents.load(self.path.read_bytes()) or {}
            return Config.from_dict(data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:  # DocumentError too
            raise CliError(
                f"cannot read {self.path}", f"{exc}; fix or delete the file and add envs again"
            ) from exc

    def save(self, config: Config) -> None:
        """Write atomically with mode 0600: the file holds access tokens."""
        self.home.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            yaml.safe_dump(config.to_dict(), out, sort_keys=False)
        os.chmod(tmp, 0o600)
        tmp.replace(self.path)

    def cert_files(self) -> list[Path]:
        return sorted((self.home / "certs").glob("*.pem"))


#: The checkout (or site-packages) holding the ``wsgate`` package: ``make run`` keeps its data
#: dir (``.wsgate``) there, so its CA is found from any working directory.
INSTALL_ROOT = Path(__file__).resolve().parents[1]


def local_ca(data_dir: Path) -> Path | None:
    """The local CA of the stack (``<data dir>/pki/ca.pem``), absolute, or None.

    A relative data dir (the default ``.wsgate``) is looked up in the working directory first,
    then in the checkout the CLI runs from, where ``make run`` / ``wsgate up`` created it.
    """
    candidates = [data_dir / "pki" / "ca.pem"]
    if not data_dir.is_absolute():
        candidates.append(INSTALL_ROOT / data_dir / "pki" / "ca.pem")
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    return None


def trusted_cas(store: Store, data_dir: Path, env_ca: str | None = None) -> list[Path]:
    """CA files to trust besides the system store: ``<home>/certs/*.pem``, the CA recorded for
    the environment, and the local CA (see :func:`local_ca`)."""
    cas = store.cert_files()
    if env_ca:
        cas.append(Path(env_ca))
    found = local_ca(data_dir)
    if found is not None and found not in cas:
        cas.append(found)
    return cas


def tls_verify(insecure: bool, cas: list[Path]) -> ssl.SSLContext | bool:
    """What httpx's ``verify=`` gets: False for ``-k``, else the system store plus ``cas``."""
    if insecure:
        return False
    context = ssl.create_default_context()
    for ca in cas:
        try:
            context.load_verify_locations(cafile=str(ca))
        except (ssl.SSLError, OSError) as exc:
            raise CliError(f"cannot load certificate {ca}", str(exc)) from exc
    return context
