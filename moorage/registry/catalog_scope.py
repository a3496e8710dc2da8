"""What ``/v2/_catalog`` may show one caller: the name ranges to read and the exact filter.

The two halves of the catalog's read rule for a restricted caller (issue 24): ``keep`` is the
rule itself (the caller's pull right, token scope honoured) applied to names in batches;
``prefixes``/``names``/``public`` are index ranges that hold every name ``keep`` can keep, so the
service reads those ranges (``MetadataStore.catalog_in``) instead of the whole catalog.  The
ranges are a superset: the result is exactly what filtering the whole catalog would give.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

Keep = Callable[[list[str]], Awaitable[list[str]]]
#: The same rule for one name whose public standing is known: (name, the repository's own
#: ``public`` flag) -> may the caller pull it.  Pure: no database, no await.
Pull = Callable[[str, bool], bool]


@dataclass(frozen=True, slots=True)
class CatalogScope:
    #: The caller's pull filter: the names of a batch it may pull, order kept.
    keep: Keep
    #: Name prefixes (each one range of the name index) ...
    prefixes: tuple[str, ...] = ()
    #: ... single names ...
    names: tuple[str, ...] = ()
    #: ... and the repositories marked public; or, with ``bounded`` False, no ranges at all
    #: (an administrator, a grant pattern starting with ``*``): the whole catalog is filtered.
    public: bool = False
    bounded: bool = True
    #: ``keep`` without its query (the ranges' read brings each repository's ``public`` flag,
    #: the scope holds every public namespace): a page is one statement, not two (issue 24).
    pull: Pull | None = None
