"""One router per resource; ``api.app.create_app`` includes them all."""

from api.routes import catalogue, events, items, ops, recommend, users

ROUTERS = (
    ops.router,
    recommend.router,
    items.router,
    catalogue.router,
    events.router,
    users.router,
)
