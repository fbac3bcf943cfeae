"""Detection of card numbers, so that none is ever accepted, stored or logged.

A card number is a Luhn-valid run of 12 to 19 digits, possibly grouped with
single spaces or dashes ("4242 4242 4242 4242"). Runs are taken whole: a
30-digit order number is not a card number just because some 16 of its digits
pass Luhn. UUIDs are set aside before the scan: their all-digit groups joined
by dashes ("...-4567-8901-2345-...") would otherwise look like a grouped card
number one time in a few hundred, and UUIDs are the most common idempotency
keys there are.
"""

from __future__ import annotations

import re

_RUN = re.compile(r"\d(?:[ -]?\d)+")
# Cheap first look: 12 digits in a row, give or take separators. Most text
# with digits (timestamps, ids) fails it, and skips the full scan.
_MAYBE = re.compile(r"\d(?:[ -]?\d){11}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card_runs(text: str) -> list[re.Match[str]]:
    # Same length, so positions still match the original text.
    scanned = _UUID.sub(lambda m: "u" * len(m.group()), text) if "-" in text else text
    found = []
    for m in _RUN.finditer(scanned):
        digits = m.group().replace(" ", "").replace("-", "")
        if 12 <= len(digits) <= 19 and luhn_valid(digits):
            found.append(m)
    return found


def contains_card_number(text: str) -> bool:
    return _MAYBE.search(text) is not None and bool(_card_runs(text))


def redact_card_numbers(text: str) -> str:
    """Replaces every card-number-like run with a marker (for logs)."""
    if _MAYBE.search(text) is None:
        return text
    runs = _card_runs(text)
    for m in reversed(runs):
        text = text[: m.start()] + "[REDACTED-PAN]" + text[m.end() :]
    return text
