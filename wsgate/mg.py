"""`wsgate mg`: manage gateway environments and deploy API projects, like `apictl mg`.

    wsgate mg add env dev --adapter https://localhost:9843
    wsgate mg login dev -u admin -p admin -k
    wsgate mg deploy api -f examples/EchoWebSocket-1.0.0 -e dev -k
    wsgate mg get apis -e dev -k
    wsgate mg undeploy api -n EchoWebSocket -v 1.0.0 -e dev -k

Every failure prints one line, ``Error: <message> (<description>)``, and exits with status 1.
"""

from __future__ import annotations

import argparse
import getpass
import json
import ssl
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

from wsgate import adapter_client as ac
from wsgate.cliconfig import (
    CliError,
    CliSettings,
    Config,
    Store,
    Token,
    local_ca,
    tls_verify,
    trusted_cas,
)

Handler = Callable[[argparse.Namespace, "Context"], int]


class Context:
    """What a command needs besides its arguments: the config store and TLS trust."""

    def __init__(self, settings: CliSettings) -> None:
        self.settings = settings
        self.store = Store(settings.cli_home)

    def verify(self, insecure: bool, env: str | None = None) -> ssl.SSLContext | bool:
        env_ca = self.store.load().cas.get(env) if env is not None and not insecure else None
        return tls_verify(insecure, trusted_cas(self.store, self.settings.data_dir, env_ca))

    def adapter(self, config: Config, env: str) -> str:
        if env not in config.envs:
            hint = f"add it with `wsgate mg add env {env} --adapter URL`"
            raise CliError(f"environment {env!r} not found", hint)
        return config.envs[env]

    def token(self, config: Config, env: str, insecure: bool = False) -> str:
        self.adapter(config, env)
        token = config.tokens.get(env)
        command = login_command(env, token.username if token else None, insecure)
        if token is None:
            raise CliError(f"not logged in to environment {env!r}", f"run `{command}` first")
        if token.expired():
            raise CliError(f"login to environment {env!r} expired", f"run `{command}`")
        return token.access_token

    def call(
        self, request: ac.Request, insecure: bool, env: str | None = None, login: bool = False
    ) -> object:
        """Send to ``env``'s adapter and decode JSON; a 401 with a stored token (not at
        ``login``) means the login must be renewed."""
        response = ac.send(request, self.verify(insecure, env), self.store.home / "certs")
        if response.status_code == 401 and env is not None and not login:
            token = self.store.load().tokens.get(env)
            command = login_command(env, token.username if token else None, insecure)
            raise CliError(
                f"the adapter rejected the stored token for {env!r}", f"run `{command}` again"
            )
        if response.status_code >= 400:
            raise ac.error_from_response(response.status_code, response.text)
        if not response.content:
            return {}
        try:
            return response.json()
        except ValueError:
            return {"text": response.text}


def login_command(env: str, username: str | None, insecure: bool) -> str:
    """The full ``mg login`` command for ``env``: it works as printed on a terminal (the
    password is prompted for) and names every flag a script needs."""
    user = username or "admin"
    return f"wsgate mg login {env} -u {user}" + (" -k" if insecure else "")


def _add_env(args: argparse.Namespace, ctx: Context) -> int:
    parts = urlsplit(args.adapter)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise CliError(f"invalid adapter URL {args.adapter!r}", "use e.g. https://localhost:9843")
    ca = Path(args.ca).resolve() if args.ca else local_ca(ctx.settings.data_dir)
    if ca is not None and not ca.is_file():
        raise CliError(f"CA certificate {args.ca} does not exist", "give a PEM file with --ca")
    config = ctx.store.load()
    existing = config.envs.get(args.name)
    if existing is not None and existing != args.adapter and not args.force:
        raise CliError(
            f"environment {args.name!r} already exists with adapter {existing}",
            f"to point it at {args.adapter} run again with --force",
        )
    config.envs[args.name] = args.adapter
    if existing != args.adapter:
        config.tokens.pop(args.name, None)  # a token of another adapter is no use here
        config.cas.pop(args.name, None)
    if ca is not None:
        config.cas[args.name] = str(ca)
    ctx.store.save(config)
    if existing is None:
        print(f"Successfully added environment '{args.name}'")
    elif existing == args.adapter:
        print(f"Environment '{args.name}' already uses adapter {existing}")
    else:
        print(f"Environment '{args.name}' now uses adapter {args.adapter} (was {existing})")
    return 0


def _remove_env(args: argparse.Namespace, ctx: Context) -> int:
    config = ctx.store.load()
    if args.name not in config.envs:
        known = ", ".join(sorted(config.envs)) or "none"
        raise CliError(
            f"environment {args.name!r} not found", f"nothing to remove; environments: {known}"
        )
    del config.envs[args.name]
    config.tokens.pop(args.name, None)
    config.cas.pop(args.name, None)
    ctx.store.save(config)
    print(f"Successfully removed environment '{args.name}'")
    return 0


def _get_envs(args: argparse.Namespace, ctx: Context) -> int:
    config = ctx.store.load()
    rows = [[name, url] for name, url in sorted(config.envs.items())]
    if args.format == "json":
        print(json.dumps([{"name": n, "adapter": u} for n, u in rows], indent=2))
    else:
        print(ac.format_table(["NAME", "ADAPTER"], rows))
    return 0


def _credentials(args: argparse.Namespace) -> tuple[str, str]:
    """Username and password from flags, stdin (``--password-stdin``) or a terminal prompt."""
    username, password = args.username, args.password
    interactive = sys.stdin.isatty()
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    if username is None:
        if not interactive:
            raise CliError(
                "no username given",
                "pass -u USERNAME with -p PASSWORD or --password-stdin, or run it on a terminal",
            )
        username = input("Username: ")
    if password is None:
        if not interactive:
            raise CliError("no password given", "pass -p PASSWORD or --password-stdin")
        password = getpass.getpass("Password: ")
    return username, password


def _login(args: argparse.Namespace, ctx: Context) -> int:
    config = ctx.store.load()
    adapter = ctx.adapter(config, args.name)
    username, password = _credentials(args)
    request = ac.token_request(adapter, username, password)
    answer = ctx.call(request, args.insecure, args.name, login=True)
    token = answer.get("accessToken") if isinstance(answer, dict) else None
    if not isinstance(token, str) or not token:
        raise CliError("the adapter answered without an accessToken", f"got {answer!r:.200}")
    config.tokens[args.name] = Token(token, username, time.time())
    ctx.store.save(config)
    print(f"Logged into '{args.name}' environment")
    return 0


def _logout(args: argparse.Namespace, ctx: Context) -> int:
    config = ctx.store.load()
    ctx.adapter(config, args.name)
    if config.tokens.pop(args.name, None) is None:
        print(f"Not logged in to '{args.name}' environment: nothing to log out of")
        return 0
    ctx.store.save(config)
    print(f"Logged out from '{args.name}' environment")
    return 0


OVERRIDE_HINT = "; use override to replace it"  # how the adapter ends "already deployed"


def _deploy(args: argparse.Namespace, ctx: Context) -> int:
    config = ctx.store.load()
    adapter = ctx.adapter(config, args.env)
    path = Path(args.file)
    filename, payload = ac.zip_project(path)
    token = ctx.token(config, args.env, args.insecure)
    request = ac.deploy_request(adapter, token, filename, payload, args.override)
    try:
        answer = ctx.call(request, args.insecure, args.env)
    except CliError as exc:
        if path.is_dir():  # the adapter names the zip the CLI made; the user gave a folder
            exc.message = exc.message.replace(filename, args.file)
            exc.description = exc.description.replace(filename, args.file)
        if exc.status == 409 and exc.description.endswith(OVERRIDE_HINT):
            exc.description = exc.description.removesuffix(OVERRIDE_HINT)
            if not args.override:
                exc.description += "; run again with -o to replace it"
        raise
    result = answer if isinstance(answer, dict) else {}
    name, version = result.get("apiName", "?"), result.get("version", "?")
    print(
        f"Successfully deployed API '{name}' version '{version}' from {args.file} "
        f"to environment '{args.env}'"
    )
    return 0


def _undeploy(args: argparse.Namespace, ctx: Context) -> int:
    config = ctx.store.load()
    adapter = ctx.adapter(config, args.env)
    token = ctx.token(config, args.env, args.insecure)
    request = ac.undeploy_request(adapter, token, args.name, args.version, args.vhost)
    ctx.call(request, args.insecure, args.env)
    print(f"API '{args.name}' version '{args.version}' undeployed from environment '{args.env}'")
    return 0


def _get_apis(args: argparse.Namespace, ctx: Context) -> int:
    config = ctx.store.load()
    adapter = ctx.adapter(config, args.env)
    token = ctx.token(config, args.env, args.insecure)
    request = ac.list_request(adapter, token, args.query, args.limit)
    answer = ctx.call(request, args.insecure, args.env)
    listing = answer if isinstance(answer, dict) else {}
    if args.format == "json":
        print(json.dumps(listing, indent=2))
    else:
        print(ac.apis_table(listing, args.limit))
    _warn_nacks(ctx, adapter, token, args)
    return 0


def _warn_nacks(ctx: Context, adapter: str, token: str, args: argparse.Namespace) -> None:
    """A warning line on stderr per client of this adapter that refused the current version."""
    try:
        status = ctx.call(ac.status_request(adapter, token), args.insecure, args.env)
    except CliError:
        return  # the listing worked; a status the adapter cannot give is no reason to fail
    for line in ac.nack_warnings(status if isinstance(status, dict) else {}):
        print(line, file=sys.stderr)


def _status(args: argparse.Namespace, ctx: Context) -> int:
    config = ctx.store.load()
    adapter = ctx.adapter(config, args.env)
    token = ctx.token(config, args.env, args.insecure)
    answer = ctx.call(ac.status_request(adapter, token), args.insecure, args.env)
    status = answer if isinstance(answer, dict) else {}
    if args.format == "json":
        print(json.dumps(status, indent=2))
    else:
        print(ac.status_text(status))
    return 0


def _insecure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-k", "--insecure", action="store_true", help="do not verify the adapter's TLS certificate"
    )


class UsageError(CliError):
    """A command line argparse refuses: one ``Error:`` line instead of the usage text."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are :class:`UsageError`s (exit status 1, one line)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, f"`{self.prog} --help` shows the usage")


def _sub(parent: Any, name: str, text: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = parent.add_parser(name, help=text, description=text)
    return parser


def _group(parent: Any, name: str, text: str) -> Any:
    """A verb like ``add`` whose only job is to hold nouns (``env``, ``api``)."""
    return _sub(parent, name, text).add_subparsers(dest="what", metavar="WHAT", required=True)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="wsgate mg",
        description="Manage gateway environments and APIs through the adapter (like apictl mg).",
        epilog=__doc__.split("\n\n")[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = parser.add_subparsers(dest="verb", metavar="COMMAND", required=True)

    add = _group(verbs, "add", "add an environment")
    p = _sub(add, "env", "add an environment: a name for an adapter URL")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--adapter", required=True, help="adapter REST URL, e.g. https://localhost:9843")
    p.add_argument(
        "--ca",
        metavar="PEM",
        help="CA certificate to trust for this adapter (default: the local stack's CA if found)",
    )
    p.add_argument("--force", action="store_true", help="replace an environment of that name")
    p.set_defaults(handler=_add_env)

    remove = _group(verbs, "remove", "remove an environment")
    p = _sub(remove, "env", "forget an environment and its token")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(handler=_remove_env)

    get = _group(verbs, "get", "list environments or APIs")
    p = _sub(get, "envs", "list the environments added")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(handler=_get_envs)
    p = _sub(get, "apis", "list the APIs deployed in an environment")
    p.add_argument("-e", "--environment", dest="env", required=True, metavar="ENV")
    p.add_argument("-q", "--query", help="search query passed to the adapter, e.g. name:Echo")
    p.add_argument("-l", "--limit", type=int, help="show at most this many APIs")
    p.add_argument("--format", choices=["table", "json"], default="table")
    _insecure(p)
    p.set_defaults(handler=_get_apis)

    p = _sub(verbs, "status", "show what each gateway label serves and what its clients hold")
    p.add_argument("-e", "--environment", dest="env", required=True, metavar="ENV")
    p.add_argument("--format", choices=["table", "json"], default="table")
    _insecure(p)
    p.set_defaults(handler=_status)

    p = _sub(verbs, "login", "log in to an environment and store the access token")
    p.add_argument("name", metavar="NAME")
    p.add_argument("-u", "--username")
    p.add_argument("-p", "--password", help="prompted for when omitted on a terminal")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    _insecure(p)
    p.set_defaults(handler=_login)

    p = _sub(verbs, "logout", "forget the access token of an environment")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(handler=_logout)

    deploy = _group(verbs, "deploy", "deploy an API project")
    p = _sub(deploy, "api", "deploy an API project (folder or .zip) to an environment")
    p.add_argument("-f", "--file", required=True, metavar="PATH", help="project folder or .zip")
    p.add_argument("-e", "--environment", dest="env", required=True, metavar="ENV")
    p.add_argument("-o", "--override", action="store_true", help="replace an existing API")
    _insecure(p)
    p.set_defaults(handler=_deploy)

    undeploy = _group(verbs, "undeploy", "undeploy an API")
    p = _sub(undeploy, "api", "remove an API from an environment")
    p.add_argument("-n", "--name", required=True)
    p.add_argument("-v", "--version", required=True)
    p.add_argument("-e", "--environment", dest="env", required=True, metavar="ENV")
    p.add_argument("--vhost", help="only the deployment on this virtual host")
    _insecure(p)
    p.set_defaults(handler=_undeploy)
    return parser


def main(argv: list[str]) -> int:
    try:
        args = build_parser().parse_args(argv)
        handler: Handler = args.handler
        return handler(args, Context(CliSettings()))
    except CliError as exc:
        print(exc.line(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
