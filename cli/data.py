"""Data in: import a dataset or a log, backfill its features."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.settings import get_settings


def register(sub: argparse._SubParsersAction) -> None:
    """``ig import | backfill``."""
    p = sub.add_parser("import", help="import a shipped dataset or your own log")
    p.add_argument("--dataset", help="online-retail | taobao | movielens (default: IG_DATASET)")
    p.add_argument("--path", help="your own events file (CSV or Parquet, canonical columns)")
    p.add_argument("--items", help="optional items file for --path (item_id, title, ...)")
    p.set_defaults(func=cmd_import)
    p = sub.add_parser("backfill", help="compute offline features with the Bytewax dataflow")
    p.add_argument("--dataset", help="canonical dataset folder to replay (default: IG_DATASET)")
    p.set_defaults(func=cmd_backfill)


def cmd_import(args: argparse.Namespace) -> int:
    from core.importers import ImportFailed, import_dataset, import_event_log

    s = get_settings()
    try:
        if args.path:
            result = import_event_log(Path(args.path), Path(args.items) if args.items else None)
        else:
            result = import_dataset(args.dataset or s.dataset, s.shared_data_dir)
    except ImportFailed as exc:
        print(f"import failed: {exc}", file=sys.stderr)
        return 2
    out = s.canonical_dir / result.dataset
    summary = result.write(out)
    _print_import_summary(summary, out)
    if args.path and result.dataset != s.dataset:
        print(f"\nTo build features from it: IG_DATASET={result.dataset} make backfill")
    return 0


def _print_import_summary(summary: dict[str, object], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"import {summary['dataset']} -> {out}", show_header=False)
    for key in (
        "source_rows",
        "events",
        "rejected",
        "users",
        "items",
        "items_with_title",
        "first_event",
        "last_event",
    ):
        table.add_row(key, str(summary[key]))
    for reason, count in dict(summary["rejected_by_reason"]).items():  # type: ignore[call-overload]
        table.add_row(f"  rejected: {reason}", str(count))
    for note in list(summary["notes"]):  # type: ignore[call-overload]
        table.add_row("note", str(note))
    Console().print(table)
    print(f"rejected rows with their reasons: {out / 'rejected.parquet'}")


def cmd_backfill(args: argparse.Namespace) -> int:
    from stream.backfill import run_backfill

    s = get_settings()
    dataset = args.dataset or s.dataset
    events = s.canonical_dir / dataset / "events.parquet"
    try:
        report = run_backfill(
            events, s.offline_dir, s.data_dir / "dead_letters", batch_rows=s.backfill_batch_rows
        )
    except FileNotFoundError as exc:
        print(f"backfill failed: {exc}", file=sys.stderr)
        return 2
    print(
        f"backfill {dataset}: {report.events} events in {report.seconds:.1f} s "
        f"({report.events_per_s:,.0f} events/s); rows {report.rows}; "
        f"dead letters {report.dead_letters}"
    )
    (s.data_dir / "backfill.json").write_text(
        json.dumps(
            {
                "dataset": dataset,
                "events": report.events,
                "seconds": report.seconds,
                "rows": report.rows,
                "dead_letters": report.dead_letters,
            },
            indent=2,
        )
    )
    return 0
