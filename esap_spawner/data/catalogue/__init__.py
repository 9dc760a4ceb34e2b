"""Data catalogues: where datasets are, and how to bring them to the hub.

``base`` holds the interface and value classes, ``locality`` the pure arithmetic, ``rucio`` and
``static`` the two implementations (``rucio`` needs the ``rucio`` extra: rucio-clients).
"""

from esap_spawner.data.catalogue.base import (
    AccessDenied,
    Catalogue,
    CatalogueError,
    CatalogueHealth,
    CatalogueUnavailable,
    DidFiles,
    DidNotFound,
    FileReplica,
    InvalidDid,
    Locality,
    QuotaExceeded,
    Replica,
    StagingFailed,
    StagingProgress,
    StagingRequest,
    StagingState,
    StagingStatus,
    check_dids,
)
from esap_spawner.data.catalogue.locality import PathOutsideMount, did_locality, pod_path

__all__ = [
    "AccessDenied",
    "Catalogue",
    "CatalogueError",
    "CatalogueHealth",
    "CatalogueUnavailable",
    "DidFiles",
    "DidNotFound",
    "FileReplica",
    "InvalidDid",
    "Locality",
    "PathOutsideMount",
    "QuotaExceeded",
    "Replica",
    "StagingFailed",
    "StagingProgress",
    "StagingRequest",
    "StagingState",
    "StagingStatus",
    "check_dids",
    "did_locality",
    "pod_path",
]
