"""The dashboard kit: a Starlette app to mount in the host app, under any prefix.

Sections: Overview, Content (and a page per content item), Revenue, Audience and Platform
health (owner only). Every card is answered by the query engine (:mod:`edgemetrics.query`)
for the viewer's principal, so a creator only ever sees their own data.

>>> from starlette.applications import Starlette
>>> from starlette.routing import Mount
>>> import tempfile, os
>>> from edgemetrics.store import EmbeddedStore
>>> from edgemetrics.principal import Principal
>>> store = EmbeddedStore(os.path.join(tempfile.mkdtemp(), "em.duckdb"))
>>> dashboard = create_dashboard(store, authenticate=lambda request: Principal.owner())
>>> host = Starlette(routes=[Mount("/analytics", app=dashboard)])

Flask and Django mount it through a2wsgi (see ``docs/dashboard.md``).
"""

from edgemetrics.dashboard_kit.app import Authenticate, Titles, as_engine, create_dashboard

__all__ = ["Authenticate", "Titles", "as_engine", "create_dashboard"]
