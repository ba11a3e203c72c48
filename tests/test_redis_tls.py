"""TLS to Redis (``rediss://``): a CA and a server certificate made here, a real redis-server with TLS on, the service's
own client (`service.queue.connect`) carrying a request there and back, and a client that does not trust the CA refused."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from service.codec import Answer, decode_answer
from service.embedded_redis import free_port, redis_server_binary
from service.queue import RequestQueue, connect
from service.redis_acl import apply_users

OPENSSL = shutil.which("openssl")
PREFIX = "sentiment"


def _openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run([OPENSSL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"openssl {' '.join(args)}: {done.stderr}"


def make_ca(folder: Path, name: str) -> tuple[Path, Path]:
    """A self-signed CA: its certificate and key (EC P-256, valid for a day)."""
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
        "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.crt",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=folder,
    )  # fmt: skip
    return folder / f"{name}.crt", folder / f"{name}.key"


def make_server_certificate(folder: Path, ca: tuple[Path, Path]) -> tuple[Path, Path]:
    """A server certificate for 127.0.0.1 and localhost, signed by ``ca``."""
    (folder / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
    )
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr", cwd=folder,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial",
        "-days", "1", "-extfile", "server.ext", "-out", "server.crt", cwd=folder,
    )  # fmt: skip
    return folder / "server.crt", folder / "server.key"


def _candidates() -> list[str]:
    found = [shutil.which("redis-server"), "/usr/bin/redis-server", redis_server_binary()]
    return list(dict.fromkeys(b for b in found if b and Path(b).exists()))


@contextmanager
def tls_redis(certificate: Path, key: Path, ca: Path) -> Iterator[tuple[int, str]]:
    """A redis-server listening only on TLS (its plain port off), from the first binary built with TLS; else skip."""
    tried = []
    for binary in _candidates():
        port = free_port()
        folder = tempfile.mkdtemp(prefix="sentiment-tls-")
        log = Path(folder) / "redis.log"
        command = [
            binary, "--bind", "127.0.0.1", "--port", "0", "--tls-port", str(port),
            "--tls-cert-file", str(certificate), "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca),
            "--tls-auth-clients", "no", "--save", "", "--appendonly", "no", "--dir", folder,
            "--daemonize", "no", "--logfile", str(log),
        ]  # fmt: skip
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            client = connect(f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}", 0.5)
            give_up_at = time.monotonic() + 10
            while process.poll() is None:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > give_up_at:
                        raise
                    time.sleep(0.05)
            if process.poll() is not None:  # e.g. "Bad directive": built without TLS
                output = process.stdout.read().decode(errors="replace") if process.stdout else ""
                tried.append(f"{binary}: {(output + (log.read_text(errors='replace') if log.exists() else '')).strip()[-200:]}")
                continue
            client.close()
            yield port, binary
            return
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            shutil.rmtree(folder, ignore_errors=True)
    pytest.skip("no redis-server built with TLS here: " + ("; ".join(tried) or "none found"))


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    if OPENSSL is None:
        pytest.skip("no openssl command (and no `cryptography` package) to make a CA with")
    folder = tmp_path_factory.mktemp("pki")
    ca = make_ca(folder, "test-ca")
    other_ca = make_ca(folder, "other-ca")
    certificate, key = make_server_certificate(folder, ca)
    return {"ca": ca[0], "other_ca": other_ca[0], "certificate": certificate, "key": key}


@pytest.fixture(scope="module")
def server(pki) -> Iterator[int]:
    with tls_redis(pki["certificate"], pki["key"], pki["ca"]) as (port, _):
        yield port


def round_trip(api: RequestQueue, worker: RequestQueue) -> None:
    """enqueue -> read -> respond -> pop_results, the service's whole Redis protocol."""
    worker.ensure_group()
    api.enqueue("tls-1", [[5, 6], [7]], int((time.time() + 30) * 1000), 10, "api-1")
    (request,) = worker.read("w1", count=10, block_ms=500)
    assert request.key == "tls-1" and [list(s) for s in request.sequences] == [[5, 6], [7]]
    worker.respond([(request, Answer([0.25, 0.75]))], result_ttl_s=5)
    ((key, answer),) = [decode_answer(item) for item in api.pop_results("api-1", block_s=1.0)]
    assert key == "tls-1" and list(answer.tolist()) == [0.25, 0.75]
    assert api.backlog() == 0


def test_a_request_travels_over_tls_with_the_services_own_client(server, pki):
    url = f"rediss://127.0.0.1:{server}/0?ssl_ca_certs={pki['ca']}"
    api_redis, worker_redis = connect(url, 0.5, blocking_s=2), connect(url, 0.5, blocking_s=2)
    round_trip(RequestQueue(api_redis, PREFIX, "sentiment", 3), RequestQueue(worker_redis, PREFIX, "sentiment", 3))
    cipher = api_redis.connection_pool.get_connection()._sock.cipher()  # the connection really is TLS
    assert cipher and cipher[1].startswith("TLSv1.")


def test_tls_and_the_acl_users_together(server, pki):
    """Managed Redis: TLS and least-privilege users at once (rediss://user:password@...)."""
    admin = connect(f"rediss://127.0.0.1:{server}/0?ssl_ca_certs={pki['ca']}", 0.5)
    passwords = {role: f"{role}-password-over-tls-0123" for role in ("api", "worker", "keda")}
    apply_users(admin, PREFIX, passwords)
    url = f"rediss://{{role}}:{{password}}@127.0.0.1:{server}/0?ssl_ca_certs={pki['ca']}"
    api_redis = connect(url.format(role="api", password=passwords["api"]), 0.5, blocking_s=2)
    worker_redis = connect(url.format(role="worker", password=passwords["worker"]), 0.5, blocking_s=2)
    round_trip(RequestQueue(api_redis, PREFIX, "sentiment", 4), RequestQueue(worker_redis, PREFIX, "sentiment", 4))
    with pytest.raises(redis.exceptions.NoPermissionError):
        api_redis.flushall()


def test_a_client_that_does_not_trust_the_ca_is_refused(server, pki):
    for url in (
        f"rediss://127.0.0.1:{server}/0?ssl_ca_certs={pki['other_ca']}",  # trusts another CA
        f"rediss://127.0.0.1:{server}/0",  # trusts the system's CAs only
    ):
        with pytest.raises(redis.ConnectionError) as refused:
            connect(url, 0.5).ping()
        assert "certificate verify failed" in str(refused.value).lower(), refused.value
    with pytest.raises((redis.ConnectionError, redis.TimeoutError)):  # and plain text is not spoken on the TLS port
        connect(f"redis://127.0.0.1:{server}/0", 0.5).ping()
