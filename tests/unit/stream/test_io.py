"""Offline compaction of the live job's small Parquet files (stream.io)."""

import json

import pyarrow.dataset as ds

from core import names as n
from stream.io import Compactor, compact_files, finish_compactions, write_partition

PREFIX = "part-live-0"


def write_batches(root, count, rows_each=3, start=0):
    """``count`` files of ``rows_each`` item_stats rows, as the live sink writes them."""
    for b in range(start, start + count):
        rows = [
            {
                n.ITEM_ID: f"i{b}-{r}",
                n.EVENT_TIMESTAMP: 1_000_000 * (b * rows_each + r),
                n.CREATED_TIMESTAMP: 1_000_000 * (b * rows_each + r) - 1,
                n.COUNT_BUCKETS: "",
                n.EVENTS_TOTAL: r + 1,
            }
            for r in range(rows_each)
        ]
        write_partition(root, n.ITEM_STATS, rows, PREFIX)


def ids(folder):
    return sorted(ds.dataset(folder, format="parquet").to_table()[n.ITEM_ID].to_pylist())


def test_compact_files_merges_levels_and_keeps_every_row(tmp_path):
    write_batches(tmp_path, 4 * 4 + 3)
    folder = tmp_path / n.ITEM_STATS
    before = ids(folder)
    assert compact_files(tmp_path, n.ITEM_STATS, PREFIX, files_per_level=4) == 16 + 4
    names = sorted(p.name for p in folder.glob("*.parquet"))
    levels = [p.split("-")[3] if "-c" in p else "0" for p in names]
    assert sorted(levels) == ["0", "0", "0", "c2"]  # 19 = 1 * 16 + 0 * 4 + 3
    assert ids(folder) == before
    assert not list(folder.glob(".*"))  # no temporary file or journal left


def test_compact_files_leaves_other_writers_files_alone(tmp_path):
    write_batches(tmp_path, 5)
    other = tmp_path / n.ITEM_STATS / "part-w0-0123456789abcdef.parquet"
    other.write_bytes(next((tmp_path / n.ITEM_STATS).glob("*.parquet")).read_bytes())
    assert compact_files(tmp_path, n.ITEM_STATS, PREFIX, files_per_level=4) == 4
    assert other.exists()


def test_finish_compactions_completes_a_killed_merge_or_drops_its_journal(tmp_path):
    write_batches(tmp_path, 3)
    folder = tmp_path / n.ITEM_STATS
    inputs = sorted(p.name for p in folder.glob("*.parquet"))
    # killed after the journal, before the rename: every input stays, the journal goes
    journal = folder / f".compact-{PREFIX}-0000000000000000.json"
    journal.write_text(json.dumps({"output": f"{PREFIX}-c1-x.parquet", "inputs": inputs}))
    finish_compactions(folder, PREFIX)
    assert sorted(p.name for p in folder.glob("*.parquet")) == inputs and not journal.exists()
    # killed after the rename: the merged file holds the inputs' rows, which then go
    (folder / f"{PREFIX}-c1-x.parquet").write_bytes((folder / inputs[0]).read_bytes())
    journal.write_text(json.dumps({"output": f"{PREFIX}-c1-x.parquet", "inputs": inputs[:1]}))
    finish_compactions(folder, PREFIX)
    assert sorted(p.name for p in folder.glob("*.parquet")) == sorted(
        [f"{PREFIX}-c1-x.parquet", *inputs[1:]]
    )


def test_the_compactor_runs_a_round_once_enough_files_were_written(tmp_path):
    folder = tmp_path / n.ITEM_STATS
    write_batches(tmp_path, 3)  # left by an earlier run
    compactor = Compactor(tmp_path, [n.ITEM_STATS], PREFIX, files_per_level=3)

    def poke_and_wait():
        compactor.poke()
        if compactor._running is not None:
            compactor._running.result()

    poke_and_wait()  # the first poke compacts what was there
    assert len(list(folder.glob("*.parquet"))) == 1
    for b in range(2):
        write_batches(tmp_path, 1, start=10 + b)
        poke_and_wait()
    assert len(list(folder.glob("*.parquet"))) == 3  # 2 new files since the round: no round
    write_batches(tmp_path, 1, start=20)
    poke_and_wait()
    assert len(list(folder.glob("*.parquet"))) == 2  # the 3 new ones merged
    compactor.close()
    assert len(ids(folder)) == 6 * 3


def test_few_full_collections_restores_the_collector_as_it_was():
    import gc

    from stream.io import YOUNG_OBJECTS, few_full_collections

    before = gc.get_threshold()
    with few_full_collections():
        assert gc.get_threshold() == (YOUNG_OBJECTS, 100, 1_000) and gc.isenabled()
        assert gc.get_freeze_count() > 0  # what lived before is out of every collection
    with few_full_collections(threshold=None):
        assert not gc.isenabled()
    assert gc.get_threshold() == before and gc.isenabled() and gc.get_freeze_count() == 0
