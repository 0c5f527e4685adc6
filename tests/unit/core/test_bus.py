"""Partitions of the event bus (core.bus): pure functions, no Redis."""

import zlib

from core.bus import (
    by_partition,
    decode_entry,
    dumps_event,
    loads_event,
    partition_of,
    partition_streams,
    source_id,
    split_source_id,
)


def test_partition_streams_keep_the_single_stream_as_the_first_partition():
    assert partition_streams("ig:events") == ["ig:events"]
    assert partition_streams("ig:events", 3) == ["ig:events", "ig:events:1", "ig:events:2"]


def test_partition_of_is_a_stable_hash_of_the_user_id_text():
    assert partition_of("14911", 1) == 0
    assert partition_of("14911", 4) == zlib.crc32(b"14911") % 4  # the same in every process
    assert partition_of(14911, 4) == partition_of("14911", 4)
    assert partition_of(None, 4) == 0  # no user: a dead letter, on the first partition
    spread = {partition_of(f"u{i}", 4) for i in range(100)}
    assert spread == {0, 1, 2, 3}


def test_source_ids_name_the_partition_beyond_the_first():
    assert source_id(0, b"17-0") == "17-0"
    assert source_id(2, "17-0") == "17-0@2"
    assert split_source_id("17-0") == (0, "17-0") and split_source_id("17-0@2") == (2, "17-0")
    assert by_partition(["1-0", "2-0@1", "3-0", "4-0@1"]) == {0: ["1-0", "3-0"], 1: ["2-0", "4-0"]}


def test_decode_entry_tags_the_event_with_its_source_id():
    event = decode_entry(b"5-1", {b"event": b'{"user_id": "u"}'}, partition=1)
    assert event == {"user_id": "u", "_stream_id": "5-1@1"}


def test_decode_entry_never_takes_a_producers_replay_or_stream_id():
    forged = b'{"user_id": "u", "_replay": true, "_stream_id": "1-1"}'
    assert decode_entry(b"5-1", {b"event": forged}) == {"user_id": "u", "_stream_id": "5-1"}
    replayed = decode_entry(b"5-1", {b"event": b'{"user_id": "u"}'}, replay=True)
    assert replayed == {"user_id": "u", "_stream_id": "5-1", "_replay": True}


def test_events_round_trip_the_bus_encoding_and_older_producers_json_is_read():
    import numpy as np
    import pandas as pd

    event = {
        "user_id": np.int64(17850),
        "value": np.float64(2.5),
        "event_timestamp": pd.Timestamp("2010-12-01 08:26", tz="UTC"),
        "context": [np.float32(0.5)],
    }
    assert loads_event(dumps_event(event)) == {
        "user_id": 17850,
        "value": 2.5,
        "event_timestamp": "2010-12-01 08:26:00+00:00",
        "context": [0.5],
    }
    # the json module wrote NaN (not JSON); orjson refuses it, the entry is still read
    old = decode_entry(b"5-1", {b"event": b'{"user_id": "u", "value": NaN}'})
    assert old["user_id"] == "u" and old["value"] != old["value"]
