"""Garbage collection, deletes and storage policies (retention, immutable tags, quotas).

* :mod:`.collector` — the online mark-and-sweep collector (protocol in ``docs/gc.md``);
* :mod:`.retention`, :mod:`.immutable`, :mod:`.quotas` — the policies, stored in the database;
* :mod:`.api` — ``DELETE /api/v1/repositories/{name}`` and the quota middleware;
* :mod:`.setup` — the server extension (:func:`setup_gc`), incl. the optional GC schedule;
* :mod:`.cli` — ``moorage gc|retention|immutable|quota``.
"""
