"""The analyst console: signed-in HTML pages served by the collector under ``/console``.

``routes`` holds the pages and actions, ``accounts`` the analysts and sessions, ``oidc`` the sign-in
through an OpenID provider (``[console.oidc]``), ``store`` the queries and the audit log,
``device_view`` the per-device figures and chart geometry, ``cli`` the ``analysts`` and ``audit``
commands. Templates and the stylesheet ship in the package.
"""
