"""The dashboard kit: a Starlette app to mount in the host app.

>>> from starlette.applications import Starlette
>>> from starlette.routing import Mount
>>> import tempfile, os
>>> from edgemetrics.store import EmbeddedStore
>>> from edgemetrics.principal import Principal
>>> store = EmbeddedStore(os.path.join(tempfile.mkdtemp(), "em.duckdb"))
>>> dashboard = create_dashboard(store, authenticate=lambda request: Principal.owner())
>>> host = Starlette(routes=[Mount("/analytics", app=dashboard)])
"""

from edgemetrics.dashboard_kit.app import Authenticate, Titles, create_dashboard

__all__ = ["Authenticate", "Titles", "create_dashboard"]
