"""Webhooks, the audit log and operational metrics, wired by :func:`setup.setup_events`.

* :mod:`.endpoints` -- webhook endpoints (config file + admin API) and their filters;
* :mod:`.formats` -- the Distribution notification envelope, CloudEvents 1.0, the signature;
* :mod:`.delivery` -- the outbox worker: claims due rows, posts them, retries, dead-letters;
* :mod:`.audit` -- audit entries from registry events, logins and admin-API changes;
* :mod:`.stats` -- Prometheus gauges computed periodically from the database, and counters;
* :mod:`.api` -- ``/api/v1/webhooks`` and ``/api/v1/audit``; :mod:`.cli` -- ``moorage audit``.

The SQL lives in :mod:`moorage.metadata.events_store`.
"""
