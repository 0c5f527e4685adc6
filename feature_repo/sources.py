"""Sources: Parquet partitions written by the stream/ dataflow, and push sources for live rows."""

from feast import FileSource, PushSource

from core import names as n
from core.settings import get_settings


def _file_source(view: str) -> FileSource:
    return FileSource(
        name=n.batch_source_name(view),
        path=str((get_settings().offline_dir / view).resolve()),
        timestamp_field=n.EVENT_TIMESTAMP,
        created_timestamp_column=n.CREATED_TIMESTAMP,
        description=f"Offline rows of {view}, appended by the feature dataflow.",
    )


user_behavior_source = _file_source(n.USER_BEHAVIOR)
user_interest_source = _file_source(n.USER_INTEREST)
item_stats_source = _file_source(n.ITEM_STATS)
item_feedback_source = _file_source(n.ITEM_FEEDBACK)

user_behavior_push = PushSource(
    name=n.push_source_name(n.USER_BEHAVIOR), batch_source=user_behavior_source
)
user_interest_push = PushSource(
    name=n.push_source_name(n.USER_INTEREST), batch_source=user_interest_source
)
item_stats_push = PushSource(name=n.push_source_name(n.ITEM_STATS), batch_source=item_stats_source)
item_feedback_push = PushSource(
    name=n.push_source_name(n.ITEM_FEEDBACK), batch_source=item_feedback_source
)
