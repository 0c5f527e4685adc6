"""Entities: the shopper and the product."""

from feast import Entity, ValueType

from core import names as n

user = Entity(
    name=n.USER,
    join_keys=[n.USER_ID],
    value_type=ValueType.STRING,
    description="A shopper (canonical user_id).",
)
item = Entity(
    name=n.ITEM,
    join_keys=[n.ITEM_ID],
    value_type=ValueType.STRING,
    description="A product (canonical item_id).",
)
