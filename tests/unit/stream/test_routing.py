"""stream.routing predicts where Bytewax runs keys and source partitions: checked against
Bytewax itself (a dataflow of several workers in this process records which worker thread
ran each key and built each partition)."""

from __future__ import annotations

import threading
from typing import Any

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.testing import TestingSink, cluster_main

from core.bus import partition_of, partition_streams
from stream.routing import bucket_keys, reader_of_partition, worker_of_key


def _where(names: list[str], keys: list[str], workers: int) -> dict[str, int]:
    """Thread id of the worker that built each source partition and ran each key."""
    seen: dict[str, int] = {}

    class Part(StatefulSourcePartition[str, None]):
        def __init__(self, name: str) -> None:
            seen[f"source:{name}"] = threading.get_ident()
            self.first = name == names[0]

        def next_batch(self) -> list[str]:
            if not self.first:
                raise StopIteration
            self.first = False
            return keys

        def snapshot(self) -> None:
            return None

    class Source(FixedPartitionedSource[str, None]):
        def list_parts(self) -> list[str]:
            return names

        def build_part(self, step_id: str, for_part: str, resume: Any) -> Part:
            return Part(for_part)

    def record(state: None, key: str) -> tuple[None, str]:
        seen[key] = threading.get_ident()
        return None, key

    flow = Dataflow("where")
    keyed = op.key_on("key", op.input("in", flow, Source()), lambda k: k)
    op.output("out", op.stateful_map("run", keyed, record), TestingSink([]))
    cluster_main(flow, [], 0, worker_count_per_proc=workers)
    return seen


@pytest.mark.parametrize("workers", [2, 3])
def test_keys_and_source_partitions_run_where_predicted(workers):
    names = partition_streams("ig:events", 12)  # "ig:events:10" sorts before "ig:events:2"
    keys = [f"user:{b}" for b in range(40)] + ["item:7~3", "anything else"]
    seen = _where(names, keys, workers)
    # Worker indexes are not visible from Python; thread ids are: each predicted worker
    # must be exactly one thread, the same for keys and for the partitions it reads.
    thread_of: dict[int, int] = {}
    for key in keys:
        assert thread_of.setdefault(worker_of_key(key, workers), seen[key]) == seen[key]
    for name in names:
        worker = reader_of_partition(names, name, workers)
        assert thread_of.setdefault(worker, seen[f"source:{name}"]) == seen[f"source:{name}"]
    assert len(set(thread_of.values())) == workers


def test_user_buckets_are_placed_on_the_reader_of_their_users_partition():
    streams = tuple(partition_streams("ig:events", 4))
    keys = bucket_keys("user", 64, 2, streams)
    assert len(set(keys)) == 64
    for user in (f"u{i}" for i in range(500)):
        partition, bucket = partition_of(user, 4), partition_of(user, 64)
        reader = reader_of_partition(list(streams), streams[partition], 2)
        assert worker_of_key(keys[bucket], 2) == reader
    assert keys[0] == "user:0" or keys[0].startswith("user:0~")
    # one worker, fewer partitions than workers, or buckets no multiple of partitions: by hash
    plain = tuple(f"user:{b}" for b in range(64))
    assert bucket_keys("user", 64, 1, streams) == plain
    assert bucket_keys("user", 64, 8, streams) == plain
    assert bucket_keys("user", 64, 3, tuple(partition_streams("ig:events", 3))) == plain
