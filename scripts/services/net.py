"""Small network steps the service scripts share.

    net.py free-port                 print a free TCP port on 127.0.0.1
    net.py wait URL PID [CAFILE]     wait (60 s at most) until URL answers at all, any HTTP status;
                                     exit 1 at once if process PID has ended, or at the deadline
"""

from __future__ import annotations

import os
import socket
import ssl
import sys
import time
import urllib.error
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait(url: str, pid: int, cafile: str | None) -> bool:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            context = ssl.create_default_context(cafile=cafile) if cafile else None
            urllib.request.urlopen(url, timeout=2, context=context).close()
            return True
        except urllib.error.HTTPError:
            return True  # it answers
        except OSError:  # not listening yet (ssl.SSLError is an OSError too)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return False
            time.sleep(0.1)
    return False


if __name__ == "__main__":
    if sys.argv[1:2] == ["free-port"]:
        print(free_port())
    elif sys.argv[1:2] == ["wait"] and len(sys.argv) in (4, 5):
        sys.exit(0 if wait(sys.argv[2], int(sys.argv[3]), sys.argv[4] if len(sys.argv) == 5 else None) else 1)
    else:
        sys.exit(__doc__)
