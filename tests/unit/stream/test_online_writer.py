"""stream.live.proto_values: the same protos as Feast's own conversion, built directly."""

import pytest
from feast.type_map import python_values_to_proto_values
from feast.value_type import ValueType

from stream.live import proto_values

CASES = [
    (ValueType.STRING, ["u1", "", "é ü", None]),
    (ValueType.INT64, [0, -3, 2**40, None]),
    (ValueType.DOUBLE, [0.0, 1.5, -2.25e-9, None]),
    (ValueType.STRING_LIST, [["a", "b"], [], ["x"], None]),
    (ValueType.DOUBLE_LIST, [[0.5, 1.0], [], [3.0], None]),
    (ValueType.INT64_LIST, [[1, 2], [], [7], None]),
    (ValueType.BOOL, [True, False]),  # not built directly: Feast's conversion
]


@pytest.mark.parametrize(("value_type", "values"), CASES)
def test_proto_values_equal_feasts_conversion(value_type, values):
    ours = proto_values(values, value_type)
    assert [p.SerializeToString() for p in ours] == [
        p.SerializeToString() for p in python_values_to_proto_values(values, value_type)
    ]
