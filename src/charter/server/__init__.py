"""Charter's server: the REST API, the OpenAI-compatible endpoint and the web console (FastAPI).

* :func:`create_app` — the application for one charter (path or :class:`~charter.runtime.Runtime`).
* :func:`app_from_env` — the same for ``uvicorn --factory`` (``CHARTER_FILE``, ``CHARTER_SERVER_*``).
* :class:`ServerSettings` — body size limit, rate limit, CORS origins, cookie flags, background telemetry,
  the review tick, the gate's drift pass, the start-up warm-up.
* :func:`status_for` — the one mapping from Charter's errors to HTTP status codes.

See ``docs/server.md``.
"""

from charter.server._app import ServerSettings, app_from_env, create_app
from charter.server._errors import RateLimited, status_for

__all__ = ["RateLimited", "ServerSettings", "app_from_env", "create_app", "status_for"]
