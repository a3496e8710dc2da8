"""Image insight: package inventories (SBOMs) stored as OCI referrers, offline vulnerability
matching against imported OSV advisories, a pull policy, and package/advisory search."""
