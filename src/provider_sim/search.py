"""The subset of Stripe's search query language that payment intent search supports.

    query   := clause ((' AND ' | ' OR ') clause)*     (AND and OR not mixed)
    clause  := ['-'] field op value
    field   := status | currency | amount | created | metadata['key']
    op      := ':' (every field) | '>' '<' '>=' '<=' (amount, created)
    value   := 'quoted' | "quoted" | integer (amount, created)

Pure: parsing raises SearchSyntaxError; matching reads a PaymentIntent.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from provider_sim.intents import PaymentIntent

MAX_CLAUSES: Final = 10

_CLAUSE: Final = re.compile(
    r"""(?P<neg>-)?
        (?:metadata\[(?:'(?P<mkey1>[^']*)'|"(?P<mkey2>[^"]*)")\]|(?P<field>[a-z_]+))
        (?P<op>>=|<=|:|>|<)
        (?:'(?P<single>(?:[^'\\]|\\.)*)'|"(?P<double>(?:[^"\\]|\\.)*)"|(?P<number>-?\d+))
    """,
    re.VERBOSE,
)
_SEPARATOR: Final = re.compile(r"\s+(AND|OR)\s+")
_ESCAPE: Final = re.compile(r"\\(.)")

_COMPARE: Final[dict[str, Callable[[int, int], bool]]] = {
    ":": operator.eq,
    ">": operator.gt,
    "<": operator.lt,
    ">=": operator.ge,
    "<=": operator.le,
}
_STRING_FIELDS: Final = frozenset({"status", "currency", "metadata"})
_NUMBER_FIELDS: Final = frozenset({"amount", "created"})


class SearchSyntaxError(ValueError):
    """The query cannot be parsed; the same query will never succeed."""


@dataclass(frozen=True, slots=True)
class Clause:
    field: str
    op: str
    value: str | int
    negated: bool = False
    metadata_key: str | None = None

    def matches(self, intent: PaymentIntent) -> bool:
        return self._test(intent) != self.negated

    def _test(self, intent: PaymentIntent) -> bool:
        if self.field == "metadata":
            assert self.metadata_key is not None
            return intent.metadata.get(self.metadata_key) == self.value
        if self.field == "status":
            return intent.status.value == self.value
        if self.field == "currency":
            return intent.currency == self.value
        assert isinstance(self.value, int)
        actual = intent.amount if self.field == "amount" else intent.created
        return _COMPARE[self.op](actual, self.value)


@dataclass(frozen=True, slots=True)
class SearchQuery:
    clauses: tuple[Clause, ...]
    any_of: bool = False

    def matches(self, intent: PaymentIntent) -> bool:
        if self.any_of:
            return any(clause.matches(intent) for clause in self.clauses)
        return all(clause.matches(intent) for clause in self.clauses)

    @property
    def payment_id(self) -> str | None:
        """The metadata payment_id every match must carry, so the ledger index can be used."""
        if self.any_of and len(self.clauses) > 1:
            return None
        for clause in self.clauses:
            if clause.metadata_key == "payment_id" and not clause.negated:
                return str(clause.value)
        return None


def parse(query: str) -> SearchQuery:
    text = query.strip()
    if not text:
        raise SearchSyntaxError("The search query must not be empty.")
    clauses: list[Clause] = []
    separators: set[str] = set()
    position = 0
    while True:
        match = _CLAUSE.match(text, position)
        if match is None:
            raise SearchSyntaxError(
                f"Malformed search query at character {position}: {text[position:][:40]!r}. "
                "Clauses look like status:'succeeded' or metadata['payment_id']:'value'."
            )
        clauses.append(_clause(match))
        position = match.end()
        if position == len(text):
            break
        separator = _SEPARATOR.match(text, position)
        if separator is None:
            raise SearchSyntaxError(
                f"Expected ' AND ' or ' OR ' at character {position}: {text[position:][:40]!r}."
            )
        separators.add(separator.group(1))
        position = separator.end()
    if len(separators) > 1:
        raise SearchSyntaxError("A search query cannot mix AND and OR.")
    if len(clauses) > MAX_CLAUSES:
        raise SearchSyntaxError(f"A search query can have at most {MAX_CLAUSES} clauses.")
    return SearchQuery(tuple(clauses), any_of=separators == {"OR"})


def _clause(match: re.Match[str]) -> Clause:
    metadata_key = match["mkey1"] if match["mkey1"] is not None else match["mkey2"]
    field = "metadata" if metadata_key is not None else match["field"]
    op = match["op"]
    quoted = match["single"] if match["single"] is not None else match["double"]
    negated = match["neg"] is not None
    if field in _STRING_FIELDS:
        if op != ":" or quoted is None:
            raise SearchSyntaxError(f"Field `{field}` only supports :'quoted value'.")
        value = _ESCAPE.sub(r"\1", quoted)
        if field == "currency":
            value = value.lower()
        return Clause(field, op, value, negated, metadata_key)
    if field in _NUMBER_FIELDS:
        raw = match["number"] if quoted is None else quoted
        if not re.fullmatch(r"-?\d+", raw):
            raise SearchSyntaxError(f"Field `{field}` needs an integer value, not {raw!r}.")
        return Clause(field, op, int(raw), negated)
    raise SearchSyntaxError(
        f"Field `{field}` is an unsupported search field for resource `payment_intents`. "
        "Supported: amount, created, currency, metadata, status."
    )
