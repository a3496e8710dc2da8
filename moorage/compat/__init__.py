"""Compatibility with CNCF Distribution (``registry:2``): its config file and its storage tree.

* :mod:`.distribution_config` -- reads a ``registry:2`` ``config.yml`` (``version: 0.1``) and
  its ``REGISTRY_*`` environment overrides into Moorage settings, refusing by name what Moorage
  cannot honour;
* :mod:`.distribution_import` -- ``moorage import-distribution``: copies a Distribution storage
  tree (filesystem or S3) into Moorage's storage and index;
* :mod:`.healthcheck` -- the container image's ``HEALTHCHECK`` command.
"""
