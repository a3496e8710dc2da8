"""Pull-through cache (``setup_proxy``) and replication (``moorage mirror``)."""
