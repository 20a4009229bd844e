"""What the HTTP server layer costs a streamed answer: aiohttp's against a bare asyncio Protocol.

    .venv/bin/python bench/http_server.py                  # 6 alternating rounds of 3 s per server
    .venv/bin/python bench/http_server.py --rounds 10 --seconds 4

The proxy serves with aiohttp (``web.Application``, its middlewares, ``StreamResponse``). This measures
that layer alone, with nothing of the gateway behind it: the servers answer ``POST
/v1/chat/completions`` with the same server-sent events (the head and a first event, then four more and
``[DONE]``), after reading the JSON body:

- ``aiohttp``: ``web.Application`` with three pass-through middlewares (the proxy runs three on this
  route: request ids, errors, file inlining), a routing table of 20 more routes, ``StreamResponse``
  whose head leaves with the first event;
- ``aiohttp, whole answer``: the same application answering with one ``web.Response`` holding all the
  events (not streamed): what is left of aiohttp's cost without ``StreamResponse``, its request side;
- ``aiohttp low-level``: ``web.Server`` (no application, router, middlewares or signals), the same
  ``StreamResponse``;
- ``bare Protocol``: an ``asyncio.Protocol`` with httptools' request parser (the proxy's upstream client,
  ``adapters/http1.py``, is built this way), writing the head and the first event in one write.

Placement as ``bench/system.py``'s: the servers on core 0, the load generator (``bench/loadgen.py``,
streamed, concurrency 1) on core 1; the servers are measured in turn, ``--rounds`` times. Prints the
time to the first event (p50, the median of the rounds) and the server's CPU time per request (user +
system, from ``/proc/<pid>/stat``): at concurrency 1 the server's CPU time before the first event is on
the way of every first chunk.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
EVENT = (
    b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","choices":[{"index":0,'
    b'"delta":{"content":"tok"},"finish_reason":null}]}\n\n'
)
REST = EVENT * 4 + b"data: [DONE]\n\n"
SERVERS = {
    "aiohttp": "aiohttp",
    "whole": "aiohttp, whole answer",
    "lowlevel": "aiohttp low-level",
    "bare": "bare Protocol",
}


# -- the servers (each in a process of its own: ``http_server.py --serve KIND PORT``) ---------------------


def _aiohttp_handler(whole: bool = False) -> Any:
    import orjson
    from aiohttp import web

    async def handle(request: web.Request) -> web.StreamResponse:
        if not orjson.loads(await request.read()).get("model"):
            raise web.HTTPBadRequest()
        if whole:
            return web.Response(
                body=EVENT + REST, headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
            )
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        response._send_headers_immediately = False  # as the proxy's relay: the head leaves with the event
        await response.prepare(request)
        await response.write(EVENT)
        await response.write(REST)
        await response.write_eof()
        return response

    return handle


async def _serve_aiohttp(port: int, low_level: bool, whole: bool) -> None:
    from aiohttp import web

    handle = _aiohttp_handler(whole)
    if low_level:
        runner: web.BaseRunner[Any] = web.ServerRunner(web.Server(handle, access_log=None))
    else:

        @web.middleware
        async def passing(request: web.Request, handler: Any) -> web.StreamResponse:
            return await handler(request)

        app = web.Application(middlewares=[passing, passing, passing])
        app.router.add_post("/v1/chat/completions", handle)
        for index in range(20):
            app.router.add_post(f"/v1/other{index}", handle)
        runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


async def _serve_bare(port: int) -> None:
    import httptools
    import orjson

    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    head += b"Transfer-Encoding: chunked\r\n\r\n"

    def chunk(data: bytes) -> bytes:
        return b"%x\r\n%s\r\n" % (len(data), data)

    class Protocol(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: Any = transport
            self.parser = httptools.HttpRequestParser(self)
            self.body: list[bytes] = []

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_body(self, body: bytes) -> None:
            self.body.append(body)

        def on_message_complete(self) -> None:
            payload = orjson.loads(b"".join(self.body))
            self.body = []
            if not payload.get("model"):
                self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                return
            self.transport.write(head + chunk(EVENT))
            self.transport.write(chunk(REST) + b"0\r\n\r\n")

    await asyncio.get_running_loop().create_server(Protocol, "127.0.0.1", port)
    await asyncio.Event().wait()


def serve(kind: str, port: int) -> None:
    import uvloop

    if kind == "bare":
        uvloop.run(_serve_bare(port))
    else:
        uvloop.run(_serve_aiohttp(port, low_level=kind == "lowlevel", whole=kind == "whole"))


# -- the measurement -------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_for(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"no server on port {port}")


def measure(args: argparse.Namespace) -> None:
    processes: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    try:
        for kind in SERVERS:
            port = _free_port()
            command = ["taskset", "-c", args.server_cores, PYTHON, __file__, "--serve", kind, str(port)]
            processes[kind] = (subprocess.Popen(command), port)
        for _, port in processes.values():
            _wait_for(port)
        runs: dict[str, list[tuple[float, float]]] = {kind: [] for kind in SERVERS}
        for round_ in range(args.rounds):
            order = list(SERVERS) if round_ % 2 == 0 else list(reversed(SERVERS))
            for kind in order:
                process, port = processes[kind]
                before = _cpu_seconds(process.pid)
                command = [
                    *("taskset", "-c", args.load_cores, PYTHON, str(ROOT / "bench" / "loadgen.py")),
                    *(f"http://127.0.0.1:{port}/v1/chat/completions", "x"),
                    *("--concurrency", "1", "--seconds", str(args.seconds), "--stream"),
                ]
                done = subprocess.run(command, capture_output=True, text=True, check=True)
                result = json.loads(done.stdout.strip().splitlines()[-1])
                requests = int(result["requests"]) + 20  # and loadgen's warm-up requests
                cpu_us = (_cpu_seconds(process.pid) - before) / requests * 1e6
                runs[kind].append((float(result["ttft_p50"]), cpu_us))
                print(
                    f"round {round_ + 1}: {kind} {result['ttft_p50']:.3f} ms, {cpu_us:.0f} µs",
                    file=sys.stderr,
                )
    finally:
        for process, _ in processes.values():
            process.terminate()
            process.wait()
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.node()} ({os.cpu_count()} cores, "
        f"Python {platform.python_version()}), load average {load}; servers on core(s) {args.server_cores}, "
        f"load generator on {args.load_cores}; {args.rounds} rounds of {args.seconds:g} s each.\n"
    )
    print("| server | first event p50 @1 (ms) | server CPU per request (µs) |")
    print("|---|---|---|")
    for kind, label in SERVERS.items():
        ttft = statistics.median(t for t, _ in runs[kind])
        cpu = statistics.median(c for _, c in runs[kind])
        print(f"| {label} | {ttft:.3f} | {cpu:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--server-cores", default="0")
    parser.add_argument("--load-cores", default="1")
    parser.add_argument("--serve", nargs=2, metavar=("KIND", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
    else:
        measure(args)


if __name__ == "__main__":
    main()
