"""A tiny local price service: the webhook the bundled pizza flow calls.

    confab price-service [--listen 127.0.0.1:8099] [--delay SECONDS] [--fail]

``POST /price`` with Confab's webhook body answers ``{"unit_price": ..., "total": ...,
"currency": "EUR"}`` for the body's ``slots.size`` and ``slots.quantity``. ``--delay``
makes it slow and ``--fail`` makes it answer 503, to try the flow's failure route.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

UNIT_PRICES = {"small": 7.5, "medium": 9.5, "large": 12.0}


def quote(body: dict[str, Any]) -> dict[str, Any]:
    slots = body.get("slots") or {}
    unit = UNIT_PRICES.get(str(slots.get("size", "")), UNIT_PRICES["medium"])
    quantity = int(slots.get("quantity") or 1)
    return {"unit_price": unit, "total": round(unit * quantity, 2), "currency": "EUR"}


class PriceService:
    """The service on a background thread (tests), or in the foreground (the CLI)."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, delay_s: float = 0.0, fail: bool = False
    ) -> None:
        self.delay_s = delay_s
        self.fail = fail
        self.calls = 0
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                service.calls += 1
                service.before_answering()
                if service.fail or self.path != "/price":
                    self.send_response(503 if service.fail else 404)
                    self.end_headers()
                    return
                answer = json.dumps(quote(body)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}/price"

    def before_answering(self) -> None:
        """Called for each request before it is answered: waits ``delay_s``."""
        time.sleep(self.delay_s)

    def start(self) -> Self:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="confab price-service", description=__doc__.split("\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:8099")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--fail", action="store_true", help="answer 503 to every call")
    args = parser.parse_args(argv)
    host, port = args.listen.rsplit(":", 1)
    service = PriceService(host, int(port), delay_s=args.delay, fail=args.fail)
    print(f"price service on {service.url}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        service.server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
