"""provider-sim: a local payment provider speaking a subset of Stripe's API, with faults.

main.py         console entry: settings, uvloop, one JSON start line
app.py          init_app(settings): routes, JSON error middleware, shutdown
stripe_api.py   /v1 views (auth, Idempotency-Key, Stripe error shape)
control_api.py  /_sim views (faults, ledger, settle, cancel, refund, dispute,
                unrecorded charges, webhooks, events, reset)
simulator.py    use cases: idempotent POSTs, injected faults, lists, search, events
forms.py        Stripe form/query parameters -> typed commands
ledger.py       pure books: intents, indexes, charges, refunds, disputes, events
intents.py      pure: statuses, transition table, test cards, intent JSON
charges.py      pure: charge JSON (a view of its intent), refunds, disputes
events.py       pure: event types, the event object, /v1/events filters
listing.py      pure: Stripe list paging (newest first, cursors, created windows)
deliverer.py    webhook delivery: workers, retries, drop/duplicate/delay/reorder
webhooks.py     pure: endpoint config, retry schedule, delivery records and stats
signature.py    Stripe-Signature (t=...,v1=HMAC-SHA256)
idempotency.py  stored responses per (API key, Idempotency-Key)
state.py        the books on disk with --state (SQLite, group commit), loaded at start
faults.py       fault settings and their validation
search.py       Stripe search query subset
settings.py     SimSettings.from_env()
"""

from provider_sim.app import init_app
from provider_sim.appkeys import SETTINGS, SIMULATOR
from provider_sim.settings import SettingsError, SimSettings

__all__ = ["SETTINGS", "SIMULATOR", "SettingsError", "SimSettings", "init_app"]
