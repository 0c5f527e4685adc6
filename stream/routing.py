"""Where Bytewax 0.21 runs things, so that a user bucket's state lives on the worker that reads
its users' events and its pieces never cross processes.

Bytewax routes a keyed step's key to worker ``SipHash-1-3(key) % workers`` (Rust's
``DefaultHasher``: zero keys, over the key's UTF-8 bytes and a ``0xff`` terminator, as Rust
hashes a ``str``), and builds source partition ``i`` of the sorted partition names on worker
``i % workers``. Both are checked against Bytewax itself (tests/unit/stream/test_routing.py). If
an upgrade changed them, the job would stay correct (Bytewax routes whatever the keys are) and
only lose the locality.

A user's bus partition is ``crc32(id) % partitions`` and its bucket ``crc32(id) % buckets``
(:func:`core.bus.partition_of`), so when ``partitions`` divides ``buckets`` every user of bucket
``b`` is on partition ``b % partitions``: :func:`bucket_keys` names bucket ``b`` so that Bytewax
routes it to that partition's reader. Without that (one worker; fewer partitions than workers,
where placing users by reader would leave workers idle; a bucket count that is no multiple of
the partitions) buckets keep the plain names ``user:<b>`` that Bytewax spreads by hash.
"""

from __future__ import annotations

from functools import cache

_MASK = (1 << 64) - 1


def _rotl(x: int, bits: int) -> int:
    return ((x << bits) | (x >> (64 - bits))) & _MASK


def _sipround(v0: int, v1: int, v2: int, v3: int) -> tuple[int, int, int, int]:
    v0 = (v0 + v1) & _MASK
    v1 = _rotl(v1, 13) ^ v0
    v0 = _rotl(v0, 32)
    v2 = (v2 + v3) & _MASK
    v3 = _rotl(v3, 16) ^ v2
    v0 = (v0 + v3) & _MASK
    v3 = _rotl(v3, 21) ^ v0
    v2 = (v2 + v1) & _MASK
    v1 = _rotl(v1, 17) ^ v2
    v2 = _rotl(v2, 32)
    return v0, v1, v2, v3


def siphash13(data: bytes) -> int:
    """SipHash-1-3 with a zero key (Rust's ``DefaultHasher::new()``)."""
    v0, v1 = 0x736F6D6570736575, 0x646F72616E646F6D
    v2, v3 = 0x6C7967656E657261, 0x7465646279746573
    end = len(data) - len(data) % 8
    for i in range(0, end, 8):
        m = int.from_bytes(data[i : i + 8], "little")
        v3 ^= m
        v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
        v0 ^= m
    last = ((len(data) & 0xFF) << 56) | int.from_bytes(data[end:], "little")
    v3 ^= last
    v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
    v0 ^= last
    v2 ^= 0xFF
    for _ in range(3):
        v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
    return v0 ^ v1 ^ v2 ^ v3


def worker_of_key(key: str, workers: int) -> int:
    """The worker Bytewax routes a keyed step's ``key`` to."""
    return siphash13(key.encode() + b"\xff") % workers


def reader_of_partition(names: list[str], name: str, workers: int) -> int:
    """The worker that builds (reads) source partition ``name`` of ``names``."""
    return sorted(names).index(name) % workers


def key_on_worker(base: str, worker: int, workers: int) -> str:
    """``base`` itself if Bytewax routes it to ``worker``, else the first ``base~<k>`` it does."""
    key, k = base, 0
    while worker_of_key(key, workers) != worker:
        k += 1
        key = f"{base}~{k}"
    return key


@cache
def bucket_keys(
    side: str, buckets: int, workers: int = 1, streams: tuple[str, ...] = ()
) -> tuple[str, ...]:
    """The key of each of ``side``'s state buckets. ``streams``: the bus partitions' stream
    names (:func:`core.bus.partition_streams`), for the user side; see the module docstring."""
    plain = tuple(f"{side}:{b}" for b in range(buckets))
    partitions = len(streams)
    if workers <= 1 or partitions < workers or buckets % partitions:
        return plain
    readers = [reader_of_partition(list(streams), name, workers) for name in streams]
    return tuple(key_on_worker(plain[b], readers[b % partitions], workers) for b in range(buckets))
