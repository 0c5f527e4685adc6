"""Operations: environment, Redis, the Feast CLI, materialize, summary, API demo, forget."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from core.settings import get_settings


def register(sub: argparse._SubParsersAction) -> None:
    """``ig env | redis | feast | materialize | summary``."""
    sub.add_parser(
        "env", help="print export lines for feature_store.yaml's variables"
    ).set_defaults(func=cmd_env)
    p = sub.add_parser("redis", help="start/stop/check the project's redis-server")
    p.add_argument("action", choices=["up", "down", "status"])
    p.add_argument("--force", action="store_true", help="down: stop without saving the data")
    p.set_defaults(func=cmd_redis)
    p = sub.add_parser("feast", help="run the feast CLI in feature_repo/ (e.g. ig feast apply)")
    p.add_argument("feast_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_feast)
    sub.add_parser("materialize", help="load the latest offline features into Redis").set_defaults(
        func=cmd_materialize
    )
    p = sub.add_parser("summary", help="print what the demo built and read one user back")
    p.add_argument("--user", help="user_id to read back (default: the most active user)")
    p.set_defaults(func=cmd_summary)
    p = sub.add_parser("api-demo", help="start the API and print a few real calls")
    p.set_defaults(func=cmd_api_demo)
    p = sub.add_parser(
        "forget",
        help="forget a shopper everywhere: stores, log, stream, artifacts, the live job's state",
        description="Removes USER_ID from the online and offline stores, the canonical log, "
        "the event and dead-letter streams, served answers and every model artifact, and asks "
        "the live job to drop its state. A running API still holds the model it loaded: use "
        "DELETE /v1/users/USER_ID there instead (it does all of this), or reload it after.",
    )
    p.add_argument("user_id")
    p.add_argument("--json", action="store_true", help="print the record as JSON")
    p.set_defaults(func=cmd_forget)


def cmd_env(args: argparse.Namespace) -> int:
    """Print ``export`` lines for the variables feature_store.yaml reads."""
    for key, value in get_settings().feast_env().items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


def cmd_redis(args: argparse.Namespace) -> int:
    from core.redis_server import RedisServer, RedisStartError, RedisStopError

    s = get_settings()
    server = RedisServer(s.redis_port, s.redis_dir, s.redis_password)
    where = f"redis-server on 127.0.0.1:{s.redis_port} (data in {s.redis_dir})"
    if args.action == "up":
        was_up = server.ping()
        try:
            server.start(daemonize=True)
        except RedisStartError as exc:
            print(f"{where}: could not start: {exc}", file=sys.stderr)
            return 2
        print(f"{where}: {'already running' if was_up else 'started'}")
        serving_dir = server.data_dir()
        if serving_dir and Path(serving_dir) != s.redis_dir.resolve():
            print(
                f"warning: the server on port {s.redis_port} keeps its data in {serving_dir}, "
                "not in this project: set IG_REDIS_PORT to use your own",
                file=sys.stderr,
            )
    elif args.action == "down":
        try:
            stopped = server.stop(save=not args.force)
        except RedisStopError as exc:
            print(exc, file=sys.stderr)
            return 1
        print(f"{where}: {'stopped' if stopped else 'was not running'}")
    else:
        up = server.ping()
        print(f"{where}: {'running' if up else 'not running'}")
        return 0 if up else 1
    return 0


def cmd_feast(args: argparse.Namespace) -> int:
    """Run the real ``feast`` CLI in feature_repo/ with the settings' environment."""
    s = get_settings()
    s.export_feast_env()
    feast = Path(sys.executable).with_name("feast")
    os.chdir(s.feature_repo)
    os.execv(str(feast), [str(feast), *args.feast_args])


def cmd_materialize(args: argparse.Namespace) -> int:
    from core.feast_store import materialize, open_store

    for view, span in materialize(open_store()).items():
        print(f"materialized {view}: {span}")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from core.summary import demo_summary

    demo_summary(get_settings(), user_id=args.user)
    return 0


def cmd_api_demo(args: argparse.Namespace) -> int:
    from api.demo import run

    return run(get_settings())


def cmd_forget(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    import redis

    from core.feast_store import open_store
    from core.redis_server import redis_client
    from models.artifact import forget_user as forget_in_artifacts
    from stream.forget import forget_user

    s = get_settings()
    user_id = args.user_id.strip()
    if not user_id:
        print("forget: USER_ID is empty", file=sys.stderr)
        return 2
    try:
        record = forget_user(
            s,
            redis_client(s, timeout=30.0),
            open_store(s),
            user_id,
            also=[("artifacts", lambda: forget_in_artifacts(s.artifacts_dir, user_id))],
        )
    except (redis.RedisError, OSError) as exc:
        print(f"forget stopped: {exc}; run it again to finish", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(asdict(record), indent=2))
    else:
        counts = ", ".join(f"{k} {v}" for k, v in record.removed.items())
        print(f"forgotten in {record.seconds:.2f} s (record {record.forget_id}): {counts}")
        if record.live_job == "queued":
            print("the live job drops the shopper's state when it reads the control event")
    return 0
