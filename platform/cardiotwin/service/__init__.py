"""The live twin service (Ray Serve), one concern per module:

- :mod:`.config`: the settings and limits (``args`` of serve/config.yaml);
- :mod:`.security`: API tokens, loopback clients, Host and Origin checks;
- :mod:`.errors`: 4xx ``{"error", "field"}`` and 500-with-request-id responses;
- :mod:`.parsing` and :mod:`.abf_limits`: requests into validated inputs within the limits;
- :mod:`.jobs`: background screen jobs persisted in a shared directory;
- :mod:`.app`: the routes and the deployment (``app_builder``).

Routes and usage: docs/serving.md.
"""
