"""The webhook destination guard on real sockets: connections go only to the addresses
that were vetted, so a resolver changing its answer (DNS rebinding) cannot steer a
request to loopback; the request and TLS still name the host (docs/webhooks.md,
"Destinations")."""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dispatcher.webhooks.config import WebhookEndpoint
from dispatcher.webhooks.guard import RefusedDestination, check_destination
from dispatcher.webhooks.send import Verdict, WebhookHttp, post
from tests.unit.test_webhooks import SECRET

PUBLIC = "93.184.215.14"


class Receiver:
    """An HTTP/1.1 server on 127.0.0.1 (TLS when given a context) noting every request."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.hosts: list[str] = []
        seen = self.hosts

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["content-length"]))
                seen.append(self.headers["host"])
                self.send_response(204)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    instance = Receiver()
    yield instance
    instance.close()


def rebinding(first: str, then: str) -> tuple[Callable[[str, int], list[str]], list[str]]:
    """A resolver answering ``first`` once, ``then`` ever after; and the names it was asked."""
    asked: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        return [first if len(asked) == 1 else then]

    return resolve, asked


def to(url: str) -> WebhookEndpoint:
    return WebhookEndpoint.model_validate({"url": url, "secret": SECRET})


def test_a_rebinding_resolver_cannot_reach_loopback(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The name is vetted as public, then answers 127.0.0.1 to any later lookup: the
    connection goes to the vetted public address (unreachable here), never to loopback."""
    connected: list[tuple[str, int]] = []
    real = socket.create_connection

    def create_connection(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        connected.append(address)
        if address[0] == PUBLIC:
            raise ConnectionRefusedError("no route in tests")
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", create_connection)
    resolver, asked = rebinding(PUBLIC, "127.0.0.1")
    http = WebhookHttp(timeout=5, allow_loopback=False, resolver=resolver)
    target = to(f"http://hooks.example:{receiver.port}/h")

    first = post(http, target, "msg_1", "{}")
    assert first.verdict is Verdict.FAILED and first.error.startswith("ConnectError: ")
    assert connected == [(PUBLIC, receiver.port)] and asked == ["hooks.example"]

    second = post(http, target, "msg_1", "{}")  # a new connection: looked up and vetted again
    assert second.verdict is Verdict.FAILED and "loopback" in second.error
    assert connected == [(PUBLIC, receiver.port)] and len(asked) == 2
    assert receiver.hosts == []


def test_a_name_resolving_anywhere_forbidden_is_not_used_at_all() -> None:
    for forbidden in ("10.0.0.8", "127.0.0.1", "169.254.169.254"):
        with pytest.raises(RefusedDestination):
            check_destination(
                "https://hooks.example/h",
                allow_loopback=False,
                resolver=lambda host, port, bad=forbidden: [PUBLIC, bad],  # type: ignore[misc]
            )


def test_the_request_names_the_host_and_a_kept_connection_is_not_looked_up_again(
    receiver: Receiver,
) -> None:
    resolver, asked = rebinding("127.0.0.1", "10.0.0.8")
    http = WebhookHttp(timeout=5, allow_loopback=True, resolver=resolver)
    target = to(f"http://hooks.test:{receiver.port}/h")
    for _ in range(3):
        assert post(http, target, "msg_1", "{}").verdict is Verdict.DELIVERED
    assert receiver.hosts == [f"hooks.test:{receiver.port}"] * 3
    assert asked == ["hooks.test"]  # one connection, kept alive, vetted once
    http.close()


def certificate(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for ``name`` and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_tls_sends_the_host_as_sni_and_verifies_the_certificate_against_it(
    tmp_path: Path,
) -> None:
    cert_path, key_path = certificate(tmp_path, "hooks.test")
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert_path, key_path)
    sni: list[str | None] = []
    server_tls.sni_callback = lambda sock, name, context: sni.append(name)
    tls_receiver = Receiver(server_tls)
    try:
        client_tls = ssl.create_default_context(cafile=str(cert_path))
        http = WebhookHttp(
            timeout=5,
            allow_loopback=True,
            resolver=lambda host, port: ["127.0.0.1"],
            tls=client_tls,
        )
        ok = post(http, to(f"https://hooks.test:{tls_receiver.port}/h"), "msg_1", "{}")
        assert ok.verdict is Verdict.DELIVERED, ok
        assert sni == ["hooks.test"]
        # The same address under another name: its certificate does not match that name.
        other = post(http, to(f"https://other.test:{tls_receiver.port}/h"), "msg_1", "{}")
        assert other.verdict is Verdict.FAILED and "CERTIFICATE_VERIFY_FAILED" in other.error
        assert tls_receiver.hosts == [f"hooks.test:{tls_receiver.port}"]
        http.close()
    finally:
        tls_receiver.close()
