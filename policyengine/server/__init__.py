"""The policy decision service (``policyengine serve``): HTTP over the library, audited before answered.

See docs/server.md. ``run.serve`` starts it; ``app.DecisionApp`` is the ASGI
application; ``bundles`` builds and verifies signed policy bundles.
"""
