"""Load users, groups and clients into the provider (run once, with django.setup())."""

import json
import sys

import django

django.setup()

from django.contrib.auth.models import Group, User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from oidc_provider.models import Client, ResponseType  # noqa: E402

spec = json.loads(sys.stdin.read())
call_command("creatersakey")
for name, (password, groups) in spec["users"].items():
    user = User.objects.create_user(name, password=password)
    for g in groups:
        user.groups.add(Group.objects.get_or_create(name=g)[0])
code = ResponseType.objects.get(value="code")
for c in spec["clients"]:
    client = Client.objects.create(
        name=c["client_id"],
        client_id=c["client_id"],
        client_secret=c["client_secret"],
        client_type="confidential",
        require_consent=False,
        _redirect_uris="\n".join(c["redirect_uris"]),
    )
    client.response_types.add(code)
print("ok")
