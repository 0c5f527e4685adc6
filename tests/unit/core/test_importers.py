import gzip
from datetime import UTC, datetime

import pandas as pd
import pytest

from core import names as n
from core.importers import (
    ImportFailed,
    canonicalize,
    derive_category,
    import_event_log,
    import_online_retail,
    parse_timestamps,
)

RETAIL_HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"
RETAIL_ROWS = [
    "536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom",
    "536365,71053,WHITE METAL LANTERN,6,2010-12-01 08:26:00,3.39,17850.0,United Kingdom",
    "536365,71053,WHITE METAL LANTERN,6,2010-12-01 08:26:00,3.39,17850.0,United Kingdom",
    "C536379,85123A,WHITE HANGING HEART T-LIGHT HOLDER,-1,2010-12-01 09:41:00,2.55,14527.0,United Kingdom",
    "536370,POST,POSTAGE,3,2010-12-01 08:45:00,18.0,12583.0,France",
    "536414,22139,,56,2010-12-01 11:52:00,0.0,,United Kingdom",
    "536500,71053,WHITE METAL LANTERN,2,2011-06-01 10:00:00,3.39,12583.0,France",
]


def _retail_file(tmp_path):
    path = tmp_path / "retail.csv.gz"
    with gzip.open(path, "wt") as f:
        f.write("\n".join([RETAIL_HEADER, *RETAIL_ROWS]) + "\n")
    return path


def test_import_online_retail_rejects_each_quirk_with_a_reason(tmp_path):
    result = import_online_retail(_retail_file(tmp_path))
    reasons = result.rejected.set_index("source_row")["reason"].to_dict()
    assert reasons == {
        2: "exact duplicate row",
        3: "cancellation",
        4: "non-product stock code",
        5: "missing user_id (no CustomerID)",
    }
    assert len(result.events) + len(result.rejected) == result.source_rows == 7
    assert result.events[n.USER_ID].tolist() == ["17850", "17850", "12583"]
    # UK winter time equals UTC; summer time (BST) is one hour ahead of UTC.
    assert result.events[n.EVENT_TIMESTAMP].iloc[-1] == pd.Timestamp("2011-06-01 09:00", tz="UTC")
    assert result.events[n.VALUE].tolist() == [6.0, 6.0, 2.0]
    lantern = result.items.set_index(n.ITEM_ID).loc["71053"]
    assert (lantern[n.TITLE], lantern[n.CATEGORY], lantern[n.CATEGORY_DERIVED]) == (
        "WHITE METAL LANTERN",
        "lantern",
        True,
    )


def test_import_writes_tables_and_summary(tmp_path):
    result = import_online_retail(_retail_file(tmp_path))
    summary = result.write(tmp_path / "out")
    assert summary["events"] == 3 and summary["rejected"] == 4
    assert (
        pd.read_parquet(tmp_path / "out" / "rejected.parquet")["raw"].str.contains("C536379").sum()
        == 1
    )


def test_canonicalize_rejects_bad_rows_and_sorts_by_time():
    frame = pd.DataFrame(
        {
            n.USER_ID: ["u1", None, "u3", "u4", "u5", "u6"],
            n.ITEM_ID: ["i1", "i2", "i3", "i4", "i5", "i6"],
            n.EVENT_TYPE: ["VIEW", "view", "teleport", "cart", "purchase", "fav"],
            n.EVENT_TIMESTAMP: pd.to_datetime(
                ["2020-01-02", "2020-01-01", "2020-01-01", None, "2200-01-01", "2020-01-01"],
                utc=True,
            ),
            n.VALUE: ["1", "2", "3", "4", "5", "x"],
        }
    )
    events, rejected = canonicalize(frame, frame.copy(), now=datetime(2024, 1, 1, tzinfo=UTC))
    assert rejected["reason"].tolist() == [
        "missing user_id",
        "unknown event_type",
        "bad or missing event_timestamp",
        "event_timestamp in the future",
        "value is not a number",
    ]
    assert events[n.EVENT_TYPE].tolist() == ["view"]


def test_parse_timestamps_accepts_iso_and_unix_seconds():
    parsed = parse_timestamps(pd.Series(["2020-01-01T00:00:00Z", "1577836800", "nonsense"]))
    assert parsed.iloc[0] == parsed.iloc[1] == pd.Timestamp("2020-01-01", tz="UTC")
    assert pd.isna(parsed.iloc[2])


def test_import_event_log_names_missing_columns(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id\nu1,i1\n")
    with pytest.raises(ImportFailed, match=r"event_type.*event_timestamp"):
        import_event_log(path)


def test_import_event_log_reads_canonical_csv(tmp_path):
    path = tmp_path / "shop.csv"
    path.write_text(
        "user_id,item_id,event_type,event_timestamp,category_id\n"
        "u1,i1,view,2024-01-01T10:00:00Z,shoes\n"
        "u1,i2,buy,2024-01-01T10:01:00Z,shoes\n"
    )
    result = import_event_log(path)
    assert result.dataset == "shop"
    assert result.events[n.ITEM_ID].tolist() == ["i1"]
    assert result.rejected["reason"].tolist() == ["unknown event_type"]
    assert result.items[n.CATEGORY].tolist() == ["shoes"]


def test_derive_category_takes_last_word():
    titles = pd.Series(["WHITE METAL LANTERN", "SET 7 BABUSHKA NESTING BOXES", None])
    assert derive_category(titles).tolist()[:2] == ["lantern", "boxes"]
    assert pd.isna(derive_category(titles).iloc[2])
