"""Client addresses and allowed networks: who is calling, as far as the pooler can trust what it is told."""

import ipaddress
from functools import cache, lru_cache

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils.text import capfirst

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: list[str]) -> list[Network]:
    """CIDRs (a bare address is its own /32 or /128), or a ValidationError naming the first bad one."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(str(value).strip(), strict=False))
        except ValueError:
            raise ValidationError(
                f"{value!r} is not a network: give a CIDR such as 10.0.0.0/8 or 2001:db8::/32"
            ) from None
    return networks


def normalized(values: list[str]) -> list[str]:
    """The networks as stored: each in its canonical form (10.1.2.3/8 becomes 10.0.0.0/8), duplicates dropped."""
    return list(dict.fromkeys(str(network) for network in parse_networks(values)))


@cache
def _trusted(proxies: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(parse_networks(list(proxies)))


def _address(value: str):
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        return None


def _within(address, networks) -> bool:
    # An IPv4 peer seen through an IPv6 socket (::ffff:10.0.0.1) is the IPv4 address.
    address = getattr(address, "ipv4_mapped", None) or address
    return any(address.version == network.version and address in network for network in networks)


def client_address(peer: str | None, forwarded_for: str | None) -> str | None:
    """The caller's address: the connection's peer, unless that peer is one of POOLER_TRUSTED_PROXIES; then the
    right-most address of X-Forwarded-For that is not a trusted proxy (each proxy appends who it saw, so only the
    entries our own proxies added can be believed, and a client's own forged entries sit to the left of them)."""
    trusted = _trusted(tuple(settings.POOLER_TRUSTED_PROXIES))
    address = _address(peer or "")
    if address is None or not _within(address, trusted):
        return peer or None
    for entry in reversed((forwarded_for or "").split(",")):
        hop = _address(entry)
        if hop is None:
            return str(address)  # a garbled list: the last hop that could be read is the caller
        address = hop
        if not _within(address, trusted):
            break
    return str(address)


def request_address(request) -> str | None:
    """client_address of a Django request (also django-axes' AXES_CLIENT_IP_CALLABLE)."""
    return client_address(request.META.get("REMOTE_ADDR"), request.META.get("HTTP_X_FORWARDED_FOR"))


def allows(networks: list[str], address: str | None) -> bool:
    """Whether `address` is in one of `networks` (stored, normalized CIDRs); no networks allow every address."""
    if not networks:
        return True
    parsed = _address(address or "")
    return parsed is not None and _within(parsed, _parsed(tuple(networks)))


@lru_cache(maxsize=4096)
def _parsed(networks: tuple[str, ...]) -> tuple[Network, ...]:
    # Keys carry a handful of networks and are read on every turn: parsed once per distinct list.
    return tuple(parse_networks(list(networks)))


class NetworksFormField(forms.CharField):
    """Networks typed one per line (or separated by commas or spaces), checked and normalized."""

    widget = forms.Textarea(attrs={"rows": 3, "placeholder": "10.0.0.0/8\n2001:db8::/32"})

    def prepare_value(self, value):
        return "\n".join(value) if isinstance(value, list) else value

    def to_python(self, value):
        if isinstance(value, list):
            return normalized(value)
        return normalized((value or "").replace(",", " ").split())


class NetworksField(models.JSONField):
    """A list of CIDRs, stored as JSON in canonical form and edited as text."""

    def formfield(self, **kwargs):
        return NetworksFormField(
            required=not self.blank, label=capfirst(self.verbose_name), help_text=self.help_text, **kwargs
        )
