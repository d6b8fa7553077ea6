"""The live web dashboard, served by the platform's API app.

``mount_dashboard(app, store, settings)`` adds the pages (overview, fleet, one page per
plant, coordination), their static files and plotly.js from the installed
plotly package, and Server-Sent Event streams that push new window sums as they land.
"""

from carbonlink.web.dashboard._mount import (
    DASHBOARD_PREFIX,
    DEFAULT_REFRESH_S,
    StatusProvider,
    mount_dashboard,
)

__all__ = ["DASHBOARD_PREFIX", "DEFAULT_REFRESH_S", "StatusProvider", "mount_dashboard"]
