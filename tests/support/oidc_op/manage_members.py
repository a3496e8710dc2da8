"""Change the provider's data while it runs: `remove GROUP USER`, `add GROUP USER`, `delete USER`,
`redirects CLIENT_ID URI...` (what an admin does in the provider's console)."""

import sys

import django

django.setup()

from django.contrib.auth.models import Group, User  # noqa: E402
from oidc_provider.models import Client  # noqa: E402

op, *args = sys.argv[1:]
if op == "remove":
    User.objects.get(username=args[1]).groups.remove(Group.objects.get(name=args[0]))
elif op == "add":
    User.objects.get(username=args[1]).groups.add(Group.objects.get_or_create(name=args[0])[0])
elif op == "delete":
    User.objects.get(username=args[0]).delete()
elif op == "redirects":
    client = Client.objects.get(client_id=args[0])
    client.redirect_uris = args[1:]
    client.save()
print("ok")
