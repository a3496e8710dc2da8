"""Compatibility with CNCF Distribution (``registry:2``): its config file and its storage tree.

* (its config file is read with the other settings sources, below every feature:
  :mod:`moorage.config_distribution`);
* :mod:`.distribution_import` -- ``moorage import-distribution``: copies a Distribution storage
  tree (filesystem or S3) into Moorage's storage and index;
* :mod:`.healthcheck` -- ``moorage healthcheck``, the container image's ``HEALTHCHECK`` command.
"""
