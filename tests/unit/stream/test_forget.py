"""Forgetting in files (stream.forget), on real Parquet files in a temporary folder."""

import json

import pyarrow as pa
import pyarrow.parquet as pq

from core import names as n
from stream.forget import forget_in_parquet, holds, parquet_leftovers, tokens


def test_tokens_split_on_anything_not_a_letter_or_digit():
    assert tokens('{"CustomerID": 14911.0, "x": "a-b"}') == {
        "CustomerID",
        "14911",
        "0",
        "x",
        "a",
        "b",
    }


def test_holds_matches_the_user_column_and_raw_rows_by_token():
    table = pa.table(
        {
            n.USER_ID: ["14911", "149110", None, "u2"],
            "raw": [None, json.dumps({"CustomerID": 14911.0}), "StockCode 149112", "x"],
        }
    )
    assert holds(table, "14911").to_pylist() == [True, True, False, False]
    assert holds(pa.table({"item_id": ["14911"]}), "14911") is None


def test_forget_in_parquet_rewrites_the_file_without_the_rows_and_keeps_the_rest(tmp_path):
    path = tmp_path / "part.parquet"
    rows = {n.USER_ID: ["a", "b", "a", "c"], "value": [1, 2, 3, 4], "recent": [["x"]] * 4}
    pq.write_table(pa.table(rows), path)
    assert parquet_leftovers(path, "a") == 2
    assert forget_in_parquet(path, "a") == 2
    assert pq.read_table(path).to_pydict() == {
        n.USER_ID: ["b", "c"],
        "value": [2, 4],
        "recent": [["x"], ["x"]],
    }
    assert parquet_leftovers(path, "a") == 0
    assert forget_in_parquet(path, "a") == 0  # idempotent: nothing left, nothing rewritten
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_parquet_leftovers_look_inside_lists_and_texts(tmp_path):
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"recent": [["i1", "u7"]], "note": ["seen u7, twice"]}), path)
    assert parquet_leftovers(path, "u7") == 2
    assert parquet_leftovers(path, "u") == 0  # a whole token only
