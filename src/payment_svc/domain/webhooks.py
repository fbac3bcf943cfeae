"""Signed webhooks' rules (SPEC §3d): what an endpoint is, its secret, which
URLs and addresses the platform may post to, and the input limits.

The address rule is payments_kit.webhook_addresses, so that registration
(the service layer, with the names resolved) and the dispatcher's
connect-time check apply the same one.
"""

from __future__ import annotations

import base64
import enum
import ipaddress
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import SplitResult, urlsplit

from payment_svc.domain.errors import FieldViolation, InvalidArgument, PermanentError
from payments_kit.cards import contains_card_number
from payments_kit.webhook_addresses import (
    LOOPBACK_NETWORKS,
    IPAddress,
    is_loopback_name,
)
from payments_kit.webhook_addresses import (
    address_allowed as address_allowed,
)

MAX_URL_CHARS = 2048
MAX_DESCRIPTION_CHARS = 500
MAX_ENDPOINTS_PER_CLIENT = 16
SECRET_BYTES = 32
SECRET_PREFIX = "whsec_"
ROTATION_OVERLAP = timedelta(hours=24)
ENDPOINT_ID_PREFIX = "we_"


class EndpointStatus(enum.Enum):
    ENABLED = "ENABLED"
    DISABLED = "DISABLED"
    DISABLED_GONE = "DISABLED_GONE"
    DISABLED_FAILING = "DISABLED_FAILING"


class TooManyEndpoints(PermanentError):
    reason = "TOO_MANY_WEBHOOK_ENDPOINTS"

    def __init__(self) -> None:
        super().__init__(
            f"a client may register at most {MAX_ENDPOINTS_PER_CLIENT} webhook endpoints:"
            " delete one first"
        )


class UrlNotAllowed(InvalidArgument):
    """A URL the platform will not post to (scheme, address, shape)."""

    reason = "WEBHOOK_URL_NOT_ALLOWED"

    def __init__(self, description: str) -> None:
        super().__init__([FieldViolation("url", description)])


@dataclass(frozen=True)
class WebhookEndpoint:
    id: uuid.UUID
    client_id: str
    url: str
    description: str
    status: EndpointStatus
    created_at: datetime
    updated_at: datetime
    previous_secret_expires_at: datetime | None = None
    # Set only on the replies that show it (create, rotate).
    secret: bytes | None = None


@dataclass(frozen=True)
class DeliveryAttempt:
    id: uuid.UUID
    update_id: uuid.UUID
    position: int
    payment_id: uuid.UUID
    attempt: int
    attempted_at: datetime
    http_status: int
    error: str
    duration_ms: int
    delivered: bool


@dataclass(frozen=True)
class EndpointChanges:
    url: str | None = None
    description: str | None = None
    enabled: bool | None = None


def format_endpoint_id(value: uuid.UUID) -> str:
    return ENDPOINT_ID_PREFIX + value.hex


def parse_endpoint_id(text: str) -> uuid.UUID | None:
    """`we_<32 hex>` to its UUID, or None when it is not one of ours."""
    hex_part = text.removeprefix(ENDPOINT_ID_PREFIX)
    if hex_part == text or len(hex_part) != 32:
        return None
    try:
        return uuid.UUID(hex=hex_part)
    except ValueError:
        return None


def format_secret(key: bytes) -> str:
    return SECRET_PREFIX + base64.b64encode(key).decode()


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def check_url(url: str, *, production: bool) -> SplitResult:
    """The URL's shape and scheme, and its host when it is an address;
    a name is resolved and its addresses checked by the caller."""
    if not url:
        raise InvalidArgument([FieldViolation("url", "is required")])
    if len(url) > MAX_URL_CHARS:
        too_long = f"must be at most {MAX_URL_CHARS} characters"
        raise InvalidArgument([FieldViolation("url", too_long)])
    if contains_card_number(url):
        raise InvalidArgument([FieldViolation("url", "looks like it carries a card number")])
    if not url.isascii() or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise UrlNotAllowed("must be an absolute URL of printable ASCII (IDNA-encode names)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UrlNotAllowed("is not a valid URL") from None
    host = (parts.hostname or "").rstrip(".")
    if parts.scheme not in ("https", "http") or not host:
        raise UrlNotAllowed("must be an https URL with a host")
    if parts.username is not None or parts.password is not None:
        raise UrlNotAllowed("must not carry credentials (user:password@)")
    if parts.fragment:
        raise UrlNotAllowed("must not have a fragment")
    if port == 0:
        raise UrlNotAllowed("must not use port 0")
    address = _literal(host)
    loopback = (
        is_loopback_name(host) if address is None else any(address in n for n in LOOPBACK_NETWORKS)
    )
    if parts.scheme == "http" and (production or not loopback):
        dev = " (http only to loopback in development)"
        raise UrlNotAllowed("must be https" + ("" if production else dev))
    if address is not None and not address_allowed(address, production=production):
        raise UrlNotAllowed("must not point to a loopback, private, link-local or reserved address")
    if address is None and loopback and production:
        raise UrlNotAllowed("must not point to a loopback, private, link-local or reserved address")
    return parts


def check_description(description: str) -> None:
    if len(description) > MAX_DESCRIPTION_CHARS:
        raise InvalidArgument(
            [FieldViolation("description", f"must be at most {MAX_DESCRIPTION_CHARS} characters")]
        )
    if contains_card_number(description):
        raise InvalidArgument([FieldViolation("description", "looks like a card number")])
