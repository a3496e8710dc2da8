def idtoken_hook(id_token, user, **kwargs):
    """The user name and the user's groups in the ID token (read again at every refresh)."""
    id_token["preferred_username"] = user.username
    id_token["groups"] = sorted(user.groups.values_list("name", flat=True))
    return id_token
