"""TLS as ws-smoke meets it: whom to trust (``--cacert``, ``--insecure``), where to connect
(``--resolve``), and what a failure was (expired, wrong name, unknown CA, not TLS at all)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from datetime import UTC, datetime

from cryptography import x509
from cryptography.x509.oid import NameOID

from smoke.model import TlsError, TlsFacts
from smoke.target import Options

# OpenSSL's X509_V_ERR_* codes, as ssl.SSLCertVerificationError.verify_code carries them.
_EXPIRED = {10}  # CERT_HAS_EXPIRED
_NAME = {62, 64}  # HOSTNAME_MISMATCH, IP_ADDRESS_MISMATCH
_UNKNOWN_CA = {2, 18, 19, 20, 21}  # no issuer / self-signed / not in the trust store
_NOT_TLS = ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG",
            "HTTP_REQUEST")
"""OpenSSL's errors for a peer that answered in plain HTTP. Not UNEXPECTED_EOF: a TLS server
that hangs up after the ClientHello (a balancer without backends) is not a plain port."""


def client_context(options: Options) -> ssl.SSLContext:
    """The system's trust store, or only ``--cacert``'s CAs, as curl does; ``--insecure``
    turns verification off (the run then carries a warning)."""
    ctx = ssl.create_default_context(cafile=options.cacert)
    if options.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _unverified() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def classify(exc: BaseException) -> TlsError:
    """Which TLS failure ``exc`` is."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        return ("expired" if code in _EXPIRED else "name_mismatch" if code in _NAME else
                "unknown_ca" if code in _UNKNOWN_CA else "other")
    if isinstance(exc, ssl.SSLError) and any(k in f"{getattr(exc, 'reason', '')} {exc}".upper()
                                             for k in _NOT_TLS):
        return "not_tls"
    return "other"


def explain(kind: TlsError, exc: BaseException) -> str:
    text = (exc.verify_message if isinstance(exc, ssl.SSLCertVerificationError)
            else getattr(exc, "reason", None) or str(exc))
    return {
        "expired": f"certificate expired ({text})",
        "name_mismatch": f"certificate not valid for this name ({text})",
        "unknown_ca": f"certificate signed by a CA this client does not trust ({text})",
        "not_tls": f"the port does not speak TLS ({text}): wss:// to a plain port?",
        "other": f"TLS handshake failed ({text})",
    }[kind]


def _name(name: x509.Name) -> str:
    cn = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return f"CN={cn[0].value!s}" if cn else name.rfc4514_string()


def facts_from(ssl_object: ssl.SSLObject | ssl.SSLSocket | None, *, verified: bool,
               now: float | None = None) -> TlsFacts | None:
    """Certificate subject, names, issuer and expiry, read from the DER form so they are
    known whether or not verification passed."""
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    facts = TlsFacts(version=ssl_object.version(), verified=verified)
    if not der:
        return facts
    cert = x509.load_der_x509_certificate(der)
    facts.subject = _name(cert.subject)
    facts.issuer = _name(cert.issuer)
    with contextlib.suppress(x509.ExtensionNotFound):
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        facts.names = [*san.get_values_for_type(x509.DNSName),
                       *(str(ip) for ip in san.get_values_for_type(x509.IPAddress))]
    not_after = cert.not_valid_after_utc
    facts.not_after = not_after.isoformat()
    current = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    facts.days_left = round((not_after - current).total_seconds() / 86400, 1)
    return facts


async def inspect(host: str, port: int, options: Options, timeout: float
                  ) -> tuple[TlsFacts | None, BaseException | None]:
    """Handshake with the options' trust; on a certificate failure, once more without
    verification to read the certificate that failed. Returns the facts and the error."""
    address = options.address_for(host, port) or host
    error: BaseException | None = None
    for ctx, verified in ((client_context(options), not options.insecure),
                          (_unverified(), False)):
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(
                address, port, ssl=ctx, server_hostname=host), timeout)
        except ssl.SSLCertVerificationError as exc:
            error = exc
            continue
        except (ssl.SSLError, OSError, TimeoutError) as exc:
            return None, error or exc
        facts = facts_from(writer.get_extra_info("ssl_object"), verified=verified)
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
        return facts, error
    return None, error
