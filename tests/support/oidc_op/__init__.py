"""A real OpenID provider for the tests: django-oidc-provider (PyPI), configured as a site would
configure it -- nothing here speaks the protocol (see tests/support/oidc_provider.py)."""
