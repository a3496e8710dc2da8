"""Accounts and administration as one service under every face.

:class:`~.service.AccountsService` (users, robots, access tokens, grants, visibility,
namespaces) and :class:`~.webhooks.WebhookService` (webhook endpoints) take an explicit
:class:`~moorage.registry.principal.Principal` and do, in this order and in one place:
authorize -> validate -> change in one database transaction -> the audit entry in that same
transaction (:mod:`.audit`).  ``/api/v1``, the web UI and the CLI only parse, call and render.
"""
