"""The `moorage` command: serve, config, version, check."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from cri.config import Config, ConfigError, load_config, render_config, validate
from cri.daemon import serve
from cri.logging import configure_logging
from cri.runtime_info import RUNTIME_NAME, agent_version


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moorage", description="A CRI runtime for Kubernetes")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("serve", "run the agent in the foreground"),
        ("config", "print the effective configuration as TOML"),
        ("check", "check this host's prerequisites"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument(
            "--config", type=Path, help="config file (default /etc/moorage/moorage.toml)"
        )
        sub.add_argument("--socket", type=Path, help="CRI socket path")
        sub.add_argument("--root", type=Path, help="persistent state directory")
        sub.add_argument("--run-dir", type=Path, help="volatile state directory")
        sub.add_argument("--log-level", help="debug, info, warning or error")
    commands.add_parser("version", help="print the version")
    return parser


def effective_config(args: argparse.Namespace) -> Config:
    config = load_config(args.config)
    runtime = config.runtime
    if args.root is not None:
        runtime = replace(runtime, root_dir=args.root)
    if args.run_dir is not None:
        runtime = replace(runtime, run_dir=args.run_dir)
    config = replace(config, runtime=runtime)
    if args.socket is not None:
        config = replace(config, socket=args.socket)
    if args.log_level is not None:
        config = replace(config, log_level=args.log_level.lower())
    return validate(config)


def _check(config: Config) -> int:
    # Not at the top: `moorage serve` has no use for the checks (nor the CNI code they load).
    from runtime.host.checks import (  # noqa: PLC0415
        format_host_checks,
        host_checks_pass,
        run_host_checks,
    )

    rt = config.runtime
    runtimes = {rt.default_handler: rt.handlers[rt.default_handler].path}
    runtimes.update({name: h.path for name, h in rt.handlers.items()})
    with tempfile.TemporaryDirectory(prefix="moorage-check-") as work_dir:
        checks = run_host_checks(
            runtimes,
            rt.conmon_path,
            rt.seccomp_profile,
            Path(rt.infra_command[0]),
            Path(work_dir),
            cni=rt.cni if rt.network_mode == "cni" else None,
        )
    print(format_host_checks(checks))
    return 0 if host_checks_pass(checks) else 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "version":
        print(f"{RUNTIME_NAME} {agent_version()} (CRI v1)")
        return 0
    try:
        config = effective_config(args)
        if args.command == "config":
            print(render_config(config), end="")
            return 0
        if args.command == "check":
            return _check(config)
        configure_logging(config.log_level)
        return asyncio.run(serve(config))
    except ConfigError as exc:
        print(f"moorage: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
