"""A ClickHouse server DSN: ``https://`` means TLS whatever the port, and the password never shows in an
error. clickhouse-connect reads TLS from the port only (443 or 8443) when given a DSN; an ``https://`` DSN on
another port, or without one, would send the credentials in clear text."""

from __future__ import annotations

import socket
import threading

import pytest

from aqueduct_accounting.adapters.clickhouse import ClickHouse, ClickHouseError

PASSWORD = "S3cret-Pw"


class FirstBytes:
    """A TCP listener that keeps what clients send first, then hangs up on them (no ClickHouse answers)."""

    def __init__(self, port: int = 0) -> None:
        self.sock = socket.create_server(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            with conn:
                conn.settimeout(5)
                try:
                    self.received.append(conn.recv(65536))
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()
        self._thread.join(timeout=10)


@pytest.mark.parametrize("port_in_dsn", [True, False])
def test_an_https_dsn_speaks_tls_and_never_sends_the_password_in_clear(port_in_dsn: bool) -> None:
    if not port_in_dsn and not _free(8443):
        pytest.skip("the client's default TLS port (8443) is taken on this machine")
    # Without a port in the DSN the client picks its default for TLS, 8443: the listener is there.
    listener = FirstBytes(0 if port_in_dsn else 8443)
    where = f"127.0.0.1:{listener.port}" if port_in_dsn else "127.0.0.1"
    try:
        with pytest.raises(ClickHouseError) as refused:
            ClickHouse(f"https://analyst:{PASSWORD}@{where}/aqueduct")
    finally:
        listener.close()
    assert listener.received, "the client never connected"
    for first in listener.received:
        assert first[:1] == b"\x16", f"not a TLS handshake: {first[:60]!r}"
        assert PASSWORD.encode() not in first
    assert PASSWORD not in str(refused.value) and PASSWORD not in repr(refused.value.__cause__)


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
