"""The card networks' published test card numbers, the forms they may take,
and a scanner that finds them in any text, independently of the product's
own rule (payments_kit.cards): no boundaries, no prefixes, no Luhn,
just "are these digits there, in any digit form, however separated".
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable, Iterable

# Test numbers published by the networks and by Stripe's documentation.
TEST_CARDS: tuple[str, ...] = (
    # Visa
    "4242424242424242",
    "4000056655665556",
    "4012888888881881",
    "4111111111111111",
    "4000002500003155",
    "4000000000003220",
    "4222222222222",
    "4917610000000000003",
    # Mastercard (51-55 and the 2-series)
    "5555555555554444",
    "2223003122003222",
    "5200828282828210",
    "5105105105105100",
    "2221000000000009",
    # American Express
    "378282246310005",
    "371449635398431",
    # Discover
    "6011111111111117",
    "6011000990139424",
    "6011981111111113",
    "6445644564456445",
    # Diners Club
    "3056930009020004",
    "36227206271667",
    "38520000023237",
    "30569309025904",
    # JCB
    "3566002020360505",
    "3530111333300000",
    # UnionPay
    "6200000000000005",
    "6205500000000000004",
    # Maestro
    "6759649826438453",
    "6799990100000000019",
    "5018000000000009",
    "6304000000000000",
    # Mir
    "2200000000000004",
)


def _in_script(zero: str) -> Callable[[str], str]:
    return lambda digits: "".join(chr(ord(zero) + int(d)) for d in digits)


def _grouped(sep: str) -> Callable[[str], str]:
    return lambda digits: sep.join(digits[i : i + 4] for i in range(0, len(digits), 4))


FORMS: dict[str, Callable[[str], str]] = {
    "plain": lambda d: d,
    "spaces": _grouped(" "),
    "dashes": _grouped("-"),
    "fullwidth": _in_script("\uff10"),
    "arabic_indic": _in_script("\u0660"),
    "devanagari": _in_script("\u0966"),
    "fullwidth_spaces": lambda d: _grouped(" ")(_in_script("\uff10")(d)),
    "arabic_indic_dashes": lambda d: _grouped("-")(_in_script("\u0660")(d)),
}


def every_form(card: str) -> list[str]:
    return [form(card) for form in FORMS.values()]


def hostile_values() -> list[str]:
    """Every test card in every form, alone and in a sentence, in turn."""
    values = []
    for i, card in enumerate(TEST_CARDS):
        for j, text in enumerate(every_form(card)):
            values.append(text if (i + j) % 2 == 0 else f"card {text} exp 12/34")
    return values


def _ascii_digits(text: str) -> str:
    out = []
    for ch in text:
        decimal = unicodedata.decimal(ch, None)
        out.append(str(decimal) if decimal is not None else unicodedata.normalize("NFKC", ch))
    return "".join(out)


def _squeezed(text: str) -> str:
    return "".join(ch for ch in _ascii_digits(text) if ch not in " -\u00a0\t")


def find_cards(text: str, cards: Iterable[str] = TEST_CARDS) -> list[str]:
    """The test card numbers found in `text`, in any digit form and however
    separated, and also once any JSON string escapes in it are undone."""
    variants = [text]
    if "\\u" in text:
        # JSON log lines and dumps escape non-ASCII digits: read them back.
        for line in text.splitlines():
            try:
                variants.append(json.dumps(json.loads(line), ensure_ascii=False))
            except ValueError:
                continue
    squeezed = [_squeezed(v) for v in variants]
    return sorted({card for card in cards for s in squeezed if card in s})
