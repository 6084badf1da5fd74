"""The certificate a ``wss://`` target presents: who it names, who signed it, how long it
has left, and whether this client trusts it (``--cacert``)."""

from __future__ import annotations

import socket
import ssl
import time

from smoke.model import Evidence, TlsFacts
from smoke.recorder import Run
from smoke.tls import classify, explain, inspect


def describe(facts: TlsFacts | None) -> str:
    if facts is None or facts.subject is None:
        return ""
    names = ", ".join(facts.names) or "no subjectAltName"
    days = f", {facts.days_left:.0f} days left" if facts.days_left is not None else ""
    return (f"subject {facts.subject} (names: {names}), issuer {facts.issuer}, "
            f"expires {facts.not_after}{days}")


async def tls_session(run: Run) -> None:
    started = time.monotonic()
    target, opts = run.target, run.options
    if opts.use_env_proxy:
        # This check connects directly; through a proxy, each handshake checks the certificate
        # and the /ws/echo handshake's session gives the facts (smoke.checks.echo).
        run.rec.add("tls", "skip", started, "skipped: --use-env-proxy (the certificate is "
                    "checked by each handshake through the proxy)")
        return
    evidence = Evidence(url=f"https://{target.hostport}",
                        connected_to=opts.address_for(target.host, target.port))
    facts, error = await inspect(target.host, target.port, opts, opts.timeout)
    run.tls = facts
    described = describe(facts)
    if isinstance(error, ssl.SSLError):
        evidence.error = "tls"
        evidence.tls_error = classify(error)
        evidence.error_detail = explain(evidence.tls_error, error)
    elif error is not None:  # refused, unresolvable, unreachable: as the handshake says it
        evidence.error = ("refused" if isinstance(error, ConnectionRefusedError) else
                          "dns" if isinstance(error, socket.gaierror) else
                          "connect_timeout" if isinstance(error, TimeoutError) else "network")
        evidence.error_detail = (f"cannot resolve host ({error.strerror})"
                                 if isinstance(error, socket.gaierror)
                                 else str(error) or type(error).__name__)
    if error is not None:
        detail = evidence.error_detail or ""
        run.rec.add("tls", "fail", started, detail + (f"; {described}" if described else ""),
                    evidence)
        return
    if facts is None:
        run.rec.add("tls", "fail", started, "no TLS session", evidence)
        return
    if opts.insecure:
        run.warnings.append(f"--insecure: the certificate of {target.hostport} was NOT "
                            "verified; this run proves nothing about TLS trust")
    if facts.days_left is not None and facts.days_left < opts.cert_warn_days:
        run.warnings.append(f"the certificate of {target.hostport} expires in "
                            f"{facts.days_left:.0f} days ({facts.not_after}; warning below "
                            f"{opts.cert_warn_days:g} days)")
    trust = "NOT VERIFIED (--insecure)" if opts.insecure else "verified"
    run.rec.add("tls", "pass", started, f"{facts.version}, {trust}: {described}", evidence,
                metrics={"days_left": facts.days_left} if facts.days_left is not None else None)
