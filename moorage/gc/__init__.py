"""Garbage collection, deletes and storage policies (retention, immutable tags, quotas).

* :mod:`.collector` — the online mark-and-sweep collector (protocol in ``docs/gc.md``), whose
  mark phase is the pure :mod:`.mark`;
* :mod:`.retention`, :mod:`.immutable`, :mod:`.quotas` — the policies (their rows:
  ``moorage.metadata.policy_store``; the collector's: ``moorage.metadata.gc_store``);
* :mod:`.repositories` — repository delete (its HTTP side: ``moorage.gc.admin_http``; the quota
  middleware: ``moorage.gc.quota_middleware``);
* :mod:`.setup` — the server extension (:func:`setup_gc`), incl. the optional GC schedule;
* :mod:`.cli` — ``moorage gc|retention|immutable|quota``.
"""
