"""The reconciler: asks the provider for the truth and has payment-svc fix the drift.
It never touches Postgres; everything it changes goes through ProviderSyncService.

    main.py            wiring: settings -> logs -> context -> /metrics -> scheduler
    settings.py        the one settings object (every RECONCILER_* variable)
    scheduler.py       APScheduler 3 (AsyncIOScheduler): the three jobs on intervals
    runner.py          one run of a job: tally, RecordReconciliationRun, metrics, gauges
      sweep.py         non-final payments (leased) against the provider
      catch_up.py      the provider's events since the checkpoint, replayed
      settlement.py    the provider's intents of a window against ours
    rules.py           the decisions, without I/O (re-drive or report, stuck, verdicts)
    findings.py        discrepancies: reported, counted, logged at ERROR
    context.py         what jobs work with (reader, payment-svc client, metrics)
    metrics.py         Prometheus names (fixed: deploy/ uses them); server.py serves them

The provider is read through payments_stripe.reader (the Stripe package);
`payments bench-sweep` (payments_dev.sweep_bench) measures the sweep rate.
"""
