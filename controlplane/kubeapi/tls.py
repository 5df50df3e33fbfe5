"""The serving certificate of the API server's TLS listener, made once per state dir.

Why TLS on loopback: kubectl (client-go's clientcmd) sends a kubeconfig's credentials only to
an ``https`` server (``IsConfigTransportTLS``), so over plain HTTP ``kubectl`` could never
authenticate. The certificate is self-signed (CA:TRUE, SAN 127.0.0.1, ::1 and localhost) and
travels in the kubeconfig as ``certificate-authority-data``, so clients verify it with no
``insecure-skip-tls-verify``. It is made with the ``openssl`` command because the ``ssl``
module cannot make keys and ``cryptography`` is not a dependency.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
from pathlib import Path

__all__ = ["TlsFiles", "ensure_certificate", "server_context"]

CERT_FILE = "kubeapi.crt"
KEY_FILE = "kubeapi.key"
_DAYS = 3650


class TlsFiles:
    __slots__ = ("cert", "key")

    def __init__(self, cert: Path, key: Path) -> None:
        self.cert = cert
        self.key = key

    def __repr__(self) -> str:
        return f"TlsFiles(cert={self.cert}, key={self.key})"


def ensure_certificate(state_dir: Path) -> TlsFiles | None:
    """The state dir's certificate and key, made on first use; None without ``openssl``."""
    files = TlsFiles(state_dir / CERT_FILE, state_dir / KEY_FILE)
    if files.cert.is_file() and files.key.is_file():
        return files
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    tmp_key = files.key.with_suffix(".key.tmp")
    tmp_cert = files.cert.with_suffix(".crt.tmp")
    fd = os.open(tmp_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.close(fd)
    try:
        subprocess.run(
            [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-days", str(_DAYS), "-subj", "/CN=knpy-kubeapi",
             "-addext", "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,digitalSignature,keyCertSign",
             "-keyout", str(tmp_key), "-out", str(tmp_cert)],
            check=True, capture_output=True, timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        tmp_key.unlink(missing_ok=True)
        tmp_cert.unlink(missing_ok=True)
        return None
    os.chmod(tmp_key, 0o600)
    os.replace(tmp_key, files.key)
    os.replace(tmp_cert, files.cert)
    return files


def server_context(files: TlsFiles) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(files.cert), str(files.key))
    return ctx
