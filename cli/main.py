"""``ig``: the parser over every command group, and ``main``."""

from __future__ import annotations

import argparse

from cli import data, live, models, ops, policy, shop, simulate


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ig", description="InterestGraph: features, live job, models and API"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (ops, data, live, models, policy, simulate, shop):
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
