"""The payment domain: plain Python, no I/O.

status.py      PaymentStatus and the one transition table (SPEC §4)
money.py       ISO 4217 currencies; amounts are int minor units
cards.py       detection of card numbers (Luhn) so none is ever stored
commands.py    typed inputs of the use cases, validated into field violations
model.py       Payment, NewPayment, PaymentEvent, ProviderResult
inbox.py       provider events to apply and what applying them did
records.py     discrepancies, runs, the quarantine, the status figures
feed.py        the change feed: updates, what a change is, cursor expiry
errors.py      the error tree every boundary maps from
"""
