"""The server's OpenAPI schema as checked into docs/server-openapi.json; regenerate it after changing a route:

.venv/bin/python -m genievm_server.openapi docs/server-openapi.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from genievm_server.app import create_app
from genievm_server.settings import ServerSettings

__all__ = ["schema_text"]


def schema_text() -> str:
    return json.dumps(create_app(ServerSettings()).openapi(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    Path(sys.argv[1]).write_text(schema_text())
