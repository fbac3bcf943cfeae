"""Detection of card numbers, so that none is ever accepted, stored or logged.

One rule, used for every input, every column written and every log line:

- Digits are normalised first: each character is mapped through NFKC, and any
  decimal digit of any script (Arabic-Indic, Devanagari, fullwidth, ...)
  counts as its ASCII digit, so a card number written in fullwidth
  (U+FF10..), Arabic-Indic (U+0660..) or Devanagari (U+0966..) digits is
  the same card as in ASCII.
- A card number is a run of 12 to 19 digits, possibly grouped with single
  spaces or dashes ("4242 4242 4242 4242", "4242-4242-4242-4242"), taken
  whole: a 30-digit order number is not a card number because some 16 of its
  digits pass Luhn.
- The run stands alone: the characters either side of it are not letters,
  digits or underscores. A digit run inside a longer token (a hex key, a
  digest, "evt_4242…") is part of an identifier, not a card number. UUIDs
  are set aside before the scan: their all-digit groups joined by dashes
  ("…-4567-8901-2345-…") would otherwise stand alone one time in a few
  hundred thousand, and UUIDs are the most common keys there are.
- It starts like a card of a real network (`NETWORK_PREFIXES`).
- Its last digit is a valid Luhn check digit.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Any

REDACTED = "[REDACTED-PAN]"

# Issuer identification ranges (first digits) of the networks whose cards are
# 12..19 digits long, inclusive ranges of prefixes of the same length:
#   Visa 4; Mastercard 51-55 and 2221-2720; Mir 2200-2204;
#   American Express 34, 37; Diners Club 300-305, 3095, 36, 38-39;
#   JCB 3528-3589; Discover 6011, 644-649, 65 (and its 622126-622925 inside
#   UnionPay's 62); UnionPay 62, 81; Maestro 50, 56-69 (covers RuPay 60 and
#   Verve 506/650); Troy 9792.
# Not included: UATP (1, airline accounts) and private-label cards; a run
# starting otherwise ("1234 5678 9012 3452") is not taken for a card.
NETWORK_PREFIXES: tuple[tuple[int, int], ...] = (
    (4, 4),
    (51, 55),
    (2221, 2720),
    (2200, 2204),
    (34, 34),
    (37, 37),
    (300, 305),
    (3095, 3095),
    (36, 36),
    (38, 39),
    (3528, 3589),
    (6011, 6011),
    (644, 649),
    (65, 65),
    (62, 62),
    (81, 81),
    (50, 50),
    (56, 69),
    (9792, 9792),
)

_RUN = re.compile(r"[0-9](?:[ -]?[0-9])+")
# Cheap first look: 12 digits in a row, give or take separators. Most text
# with digits (timestamps, ids) fails it, and skips the full scan.
_MAYBE = re.compile(r"[0-9](?:[ -]?[0-9]){11}")
# Groups of a run split at its spaces (dash-joined digits, as in a UUID or a
# phone number, stay one group).
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_GROUP = re.compile(r"[0-9](?:-?[0-9])*")


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


def network_prefix(digits: str) -> bool:
    """True when the digits start like a card of a network we know."""
    for low, high in NETWORK_PREFIXES:
        width = len(str(low))
        if low <= int(digits[:width]) <= high:
            return True
    return False


def is_card_number(digits: str) -> bool:
    """True for a bare run of ASCII digits that is a card number."""
    return 12 <= len(digits) <= 19 and network_prefix(digits) and luhn_valid(digits)


def _normalise(text: str) -> tuple[str, list[int] | None]:
    """The text with digits in ASCII, and where each of its characters came
    from in `text` (None: the same positions)."""
    if text.isascii():
        return text, None
    pieces: list[str] = []
    origin: list[int] = []
    for i, ch in enumerate(text):
        if ch.isascii():
            piece = ch
        else:
            decimal = unicodedata.decimal(ch, None)
            piece = str(decimal) if decimal is not None else unicodedata.normalize("NFKC", ch)
        pieces.append(piece)
        origin.extend([i] * len(piece))
    return "".join(pieces), origin


def _word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _stands_alone(text: str, start: int, end: int) -> bool:
    return not (start > 0 and _word(text[start - 1])) and not (end < len(text) and _word(text[end]))


def _card_spans(text: str) -> list[tuple[int, int]]:
    """Where the card numbers are in `text` (positions in `text` itself)."""
    normal, origin = _normalise(text)
    if _MAYBE.search(normal) is None:
        return []
    if "-" in normal:  # same length: positions still match
        normal = _UUID.sub(lambda m: "u" * len(m.group()), normal)
    found: list[tuple[int, int]] = []
    for m in _RUN.finditer(normal):
        digits = m.group().replace(" ", "").replace("-", "")
        if is_card_number(digits) and _stands_alone(normal, m.start(), m.end()):
            found.append((m.start(), m.end()))
        elif " " in m.group():
            found.extend(_grouped_card(normal, m))
    if origin is None:
        return found
    return [(origin[start], origin[end - 1] + 1) for start, end in found]


def _grouped_card(text: str, run: re.Match[str]) -> list[tuple[int, int]]:
    """A card number among other space-separated digits ("4242 4242 4242
    4242 12", an expiry date after it): windows of whole groups, the longest
    card number from each group on, then on after it."""
    groups = [(g.start(), g.end()) for g in _GROUP.finditer(run.group())]
    found = []
    i = 0
    while i < len(groups):
        longest = None
        for j in range(i, len(groups)):
            start, end = groups[i][0], groups[j][1]
            digits = run.group()[start:end].replace(" ", "").replace("-", "")
            if len(digits) > 19:
                break
            if is_card_number(digits) and _stands_alone(
                text, run.start() + start, run.start() + end
            ):
                longest = j
        if longest is not None:
            found.append((run.start() + groups[i][0], run.start() + groups[longest][1]))
            i = longest
        i += 1
    return found


def contains_card_number(text: str) -> bool:
    return bool(_card_spans(text))


def contains_embedded_card_number(token: str) -> bool:
    """For a field that is one token (a provider's payment-method id): a card
    number anywhere in it, glued to letters or not ("pm_4242…")."""
    normal, _ = _normalise(token)
    return any(
        is_card_number(m.group().replace(" ", "").replace("-", "")) for m in _RUN.finditer(normal)
    )


def redact_card_numbers(text: str) -> str:
    """Replaces every card number with a marker."""
    spans = _card_spans(text)
    for start, end in reversed(spans):
        text = text[:start] + REDACTED + text[end:]
    return text


def redact_value(value: Any) -> Any:
    """A JSON-like value with every card number replaced, structurally:
    strings are redacted in place, a number that is a card number becomes
    the string marker, keys are redacted too. The result is still valid
    JSON when the input was; other objects are returned as they are."""
    if isinstance(value, str):
        return redact_card_numbers(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        try:
            text = repr(value)
        except ValueError:  # an int beyond the conversion limit: no card
            return value
        return REDACTED if contains_card_number(text) else value
    if isinstance(value, Mapping):
        return {redact_value(k): redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    return value
