"""The ``sluice`` command: argument handling only, the work happens in the library."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from bot import __version__

EXIT_OK = 0
EXIT_GATE_FAILED = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse exits 2 on usage errors, as we want
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"sluice: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sluice", description="Policy-gated GitOps pull-request bot.")
    parser.add_argument("--version", action="version", version=f"sluice {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    preview = commands.add_parser("preview", help="print the report the bot would post")
    preview.add_argument("--repo", required=True, type=Path, help="path to the git repository")
    preview.add_argument("--base", required=True, help="base revision (branch, tag or SHA)")
    preview.add_argument("--head", required=True, help="head revision (branch, tag or SHA)")
    preview.add_argument("--format", choices=("markdown", "json"), default="markdown")
    preview.add_argument("--keys", type=Path, help="trusted keys: *.asc and allowed_signers")
    preview.add_argument("--config", type=Path, help="server config file (policy engine etc.)")
    preview.add_argument("--all", action="store_true", help="render every app, not only affected")
    preview.add_argument("--app", action="append", default=[], help="also render this app")
    preview.add_argument("--policy-engine", choices=("regorus", "regopy", "opa"))
    preview.add_argument("--opa-url", help="OPA server for --policy-engine opa")
    preview.add_argument("--cache-dir", type=Path, help="render/signature cache directory")

    render = commands.add_parser("render", help="render apps at one revision as YAML")
    render.add_argument("--repo", required=True, type=Path)
    render.add_argument("--ref", required=True)
    render.add_argument("--app", help="render only this app")
    render.add_argument("--cache-dir", type=Path)

    policy = commands.add_parser("policy", help="policy tools")
    policy_commands = policy.add_subparsers(
        dest="policy_command", required=True, parser_class=_Parser
    )
    policy_test = policy_commands.add_parser("test", help="run Rego unit tests (test_* rules)")
    policy_test.add_argument("directory", nargs="?", type=Path, default=Path("policies"))
    policy_test.add_argument("--engine", choices=("regorus", "regopy"), default="regorus")

    config = commands.add_parser("config", help="server config tools")
    config_commands = config.add_subparsers(
        dest="config_command", required=True, parser_class=_Parser
    )
    check = config_commands.add_parser("check", help="validate a server or repo config file")
    check.add_argument("file", type=Path)

    serve = commands.add_parser("serve", help="run the webhook bot")
    serve.add_argument("--config", type=Path, help="server config file (per-repo settings)")
    serve.add_argument("--bind", default="0.0.0.0:8080", help="HOST:PORT")
    serve.add_argument("--dev", action="store_true", help="use Flask's development server")
    serve.add_argument(
        "--role",
        choices=("intake", "worker", "all"),
        default="all",
        help="intake: webhooks only; worker: job workers only; all: both (default)",
    )

    puller = commands.add_parser("puller", help="run the in-cluster puller")
    puller.add_argument("--config", required=True, type=Path, help="puller config file (YAML)")
    puller.add_argument("--bind", default="0.0.0.0:8081", help="HOST:PORT for the puller API")
    puller.add_argument("--once", action="store_true", help="run one cycle; exit 0 ok, 1 not")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = {
        "preview": _preview,
        "render": _render,
        "policy": _policy,
        "config": _config,
        "serve": _serve,
        "puller": _puller,
    }[args.command]
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except _UsageError as exc:
        print(f"sluice: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - the CLI contract: 2 for an internal error
        print(f"sluice: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_USAGE


class _UsageError(Exception):
    pass


def _preview(args: argparse.Namespace) -> int:
    from bot.config import ConfigError
    from bot.preview import PreviewError, PreviewOptions, run_preview
    from bot.report import render_markdown, to_json
    from bot.signatures import TrustedKeysError

    engine, opa_url = _policy_engine_settings(args)
    options = PreviewOptions(
        keys_dir=args.keys,
        all_apps=args.all,
        extra_apps=tuple(args.app),
        policy_backend=engine,
        opa_url=opa_url,
        opa_token=os.environ.get("SLUICE_OPA_TOKEN") or None,
        **({"cache_dir": args.cache_dir} if args.cache_dir else {}),
    )
    if args.keys is not None and not args.keys.is_dir():
        raise _UsageError(f"--keys {args.keys}: not a directory")
    try:
        report = run_preview(args.repo, args.base, args.head, options)
    except (PreviewError, ConfigError, TrustedKeysError) as exc:
        raise _UsageError(str(exc)) from None
    output = to_json(report) if args.format == "json" else render_markdown(report)
    sys.stdout.write(output if output.endswith("\n") else output + "\n")
    return EXIT_GATE_FAILED if report.verdict in ("fail", "error") else EXIT_OK


def _policy_engine_settings(args: argparse.Namespace) -> tuple[str, str | None]:
    engine, opa_url = "regorus", None
    if args.config is not None:
        from bot.config.server import load_server_file_defaults

        engine, opa_url = load_server_file_defaults(args.config)
    engine = args.policy_engine or engine
    opa_url = args.opa_url or opa_url
    if engine == "opa" and not opa_url:
        raise _UsageError("--policy-engine opa needs --opa-url")
    return engine, opa_url


def _render(args: argparse.Namespace) -> int:
    import yaml

    from bot.config import ConfigError, parse_repo_config
    from bot.exports import ExportCache
    from bot.gitops import Git, GitError
    from bot.preview import PreviewOptions
    from bot.render import RenderCache, render_apps

    options = PreviewOptions(**({"cache_dir": args.cache_dir} if args.cache_dir else {}))
    git = Git(args.repo)
    try:
        sha = git.resolve(args.ref)
        raw = git.read_file(sha, ".sluice.yaml")
        if raw is None:
            raise _UsageError(f".sluice.yaml not found at {args.ref}")
        config = parse_repo_config(raw)
    except (GitError, ConfigError) as exc:
        raise _UsageError(str(exc)) from None
    apps = [a for a in config.apps if args.app in (None, a.name)]
    if args.app and not apps:
        raise _UsageError(f"no app named {args.app!r} in .sluice.yaml")
    options.cache_dir.mkdir(parents=True, exist_ok=True)
    with ExportCache(options.cache_dir / "exports").lease(git, sha) as root:
        rendered_apps = render_apps(
            apps, root, limits=options.limits, cache=RenderCache(options.cache_dir / "renders")
        )
    failed = False
    for rendered in rendered_apps:
        print(f"# app: {rendered.app.name} ({rendered.renderer})")
        if rendered.error:
            failed = True
            print(f"sluice: {rendered.app.name}: {rendered.error}", file=sys.stderr)
            continue
        for obj in rendered.objects:
            sys.stdout.write("---\n" + yaml.safe_dump(obj, sort_keys=True))
    return EXIT_GATE_FAILED if failed else EXIT_OK


def _policy(args: argparse.Namespace) -> int:
    from bot.policy import run_policy_tests

    if not args.directory.is_dir():
        raise _UsageError(f"{args.directory}: not a directory")
    summary = run_policy_tests(args.directory, backend=args.engine)
    print(summary.format())
    return EXIT_OK if summary.ok else EXIT_GATE_FAILED


def _config(args: argparse.Namespace) -> int:
    from bot.config import ConfigError, parse_repo_config
    from bot.config.server import check_config_file

    if not args.file.is_file():
        raise _UsageError(f"{args.file}: no such file")
    if args.file.name == ".sluice.yaml":
        try:
            parse_repo_config(args.file.read_bytes(), str(args.file))
            problems: list[str] = []
        except ConfigError as exc:
            problems = [str(exc)]
    else:
        problems = check_config_file(args.file)
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print(f"{args.file}: ok")
    return EXIT_GATE_FAILED if problems else EXIT_OK


def _serve(args: argparse.Namespace) -> int:
    from bot.config import ConfigError
    from bot.config.server import ServerConfig
    from bot.server.serve import check_limits, run

    try:
        config = ServerConfig.from_env(os.environ, args.config)
        check_limits(os.environ)
    except ConfigError as exc:
        raise _UsageError(str(exc)) from None
    if args.dev and args.role != "all":
        raise _UsageError("--dev runs intake and workers in one process; it takes no --role")
    return run(config, bind=args.bind, dev=args.dev, role=args.role)


def _puller(args: argparse.Namespace) -> int:
    from bot.config import ConfigError
    from bot.puller.config import load_puller_config
    from bot.puller.server import parse_bind, run

    try:
        config = load_puller_config(args.config, os.environ)
        if not args.once:
            parse_bind(args.bind)
            if not config.api_token:
                raise _UsageError("SLUICE_PULLER_TOKEN must be set to serve the puller API")
    except (ConfigError, ValueError) as exc:
        raise _UsageError(str(exc)) from None
    try:
        return run(config, bind=args.bind, once=args.once)
    except ConfigError as exc:
        raise _UsageError(str(exc)) from None


if __name__ == "__main__":
    sys.exit(main())
