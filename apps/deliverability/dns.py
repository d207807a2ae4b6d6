"""What a domain publishes in DNS for mail authentication: SPF, DKIM, DMARC (dnspython).

Used by the admin's check page. Every lookup has a short timeout; without a reachable
resolver (an offline machine) each record says so instead of failing the page.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

# Seconds a lookup may take: the check page shows "unreachable" rather than hang.
TIMEOUT = 2.0


@dataclass
class Record:
    name: str
    kind: str  # SPF, DKIM, DMARC
    status: str  # ok, missing, mismatch, unreachable
    values: list[str]
    advice: str = ""


def _resolver():
    import dns.resolver

    resolver = dns.resolver.Resolver(configure=not settings.EDM_DNS_NAMESERVER)
    if settings.EDM_DNS_NAMESERVER:
        host, _, port = settings.EDM_DNS_NAMESERVER.partition(":")
        resolver.nameservers = [host]
        resolver.port = int(port or 53)
    resolver.timeout = resolver.lifetime = TIMEOUT
    return resolver


def _txt(resolver, name: str) -> list[str] | None:
    """TXT strings at ``name`` ([] when none), None when DNS cannot be reached."""
    import dns.exception
    import dns.resolver

    try:
        answer = resolver.resolve(name, "TXT")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except (dns.exception.DNSException, OSError):
        return None
    return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]


def domain_check(*, domain: str, selector: str = "", public_key: str = "") -> list[Record]:
    """SPF at ``domain``, DKIM at ``selector._domainkey.domain`` (compared with
    ``public_key`` when given), DMARC at ``_dmarc.domain``."""
    try:
        resolver = _resolver()
    except Exception:  # noqa: BLE001 - no resolver configuration at all: offline
        resolver = None
    records = []

    def look(name: str) -> list[str] | None:
        return None if resolver is None else _txt(resolver, name)

    spf = look(domain)
    spf_values = [v for v in spf or [] if v.lower().startswith("v=spf1")]
    records.append(
        _record(
            domain,
            "SPF",
            spf,
            spf_values,
            advice='publish e.g. "v=spf1 include:<your provider> ~all" naming every sender',
        )
    )
    if selector:
        name = f"{selector}._domainkey.{domain}"
        found = look(name)
        dkim_values = [v for v in found or [] if "p=" in v]
        record = _record(name, "DKIM", found, dkim_values, advice="publish the key shown above")
        if record.status == "ok" and public_key:
            published = "".join(
                part.strip()[2:]
                for v in dkim_values
                for part in v.split(";")
                if part.strip().startswith("p=")
            )
            if published.replace(" ", "") != public_key:
                record.status = "mismatch"
                record.advice = "the published p= is not this key's public key"
        records.append(record)
    name = f"_dmarc.{domain}"
    found = look(name)
    dmarc_values = [v for v in found or [] if v.lower().startswith("v=dmarc1")]
    records.append(
        _record(
            name,
            "DMARC",
            found,
            dmarc_values,
            advice=f'publish e.g. "v=DMARC1; p=none; rua=mailto:dmarc@{domain}", then tighten',
        )
    )
    return records


def _record(name: str, kind: str, found, values: list[str], *, advice: str) -> Record:
    if found is None:
        return Record(name, kind, "unreachable", [], "DNS could not be reached from here")
    if not values:
        return Record(name, kind, "missing", found, advice)
    return Record(name, kind, "ok", values)
