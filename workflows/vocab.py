"""The closed vocabularies the service's forms and schemas offer (组织角色, 层级, 等次 …),
re-exported so that `service/` never imports `workflows.models`."""

from __future__ import annotations

from .models import (
    FACT_GRADES,
    ORG_ROLES,
    RESULT_SOURCES,
    SANCTION_CATEGORIES,
    SANCTION_KINDS,
    TIERS,
)

__all__ = ["FACT_GRADES", "ORG_ROLES", "RESULT_SOURCES", "SANCTION_CATEGORIES",
           "SANCTION_KINDS", "TIERS"]
