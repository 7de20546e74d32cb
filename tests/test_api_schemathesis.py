"""schemathesis over the whole OpenAPI document: no 500, no response that breaks the schema.

Requests are generated from the document (valid and invalid ones), sent as an admin who is
also a process owner (the widest access, so most requests get past authorization and reach
the code that could break), with a bounded number of examples per operation.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from workflows.org import assign_role


@pytest.fixture
def st_schema(api, db):
    with db.unit_of_work() as s:
        from workflows.models import Person, Unit

        assign_role(s, s.get(Person, api.org.admin), "process_owner", s.get(Unit, api.org.units["ORG"]))
    # A few cases so that ids generated from small integers hit real rows too.
    for who in ("s1", "s2", "t1"):
        api.post("owner", "/api/v1/cases", json={
            "flow": "regular-assessment", "subject_id": api.org.ids[who], "period_key": "2026-11"})
    headers = api.headers("admin")
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", api.client.application,
                                            headers=headers)
    schema.auth_headers = headers
    return schema


# Logging out would revoke the token that every later request uses.
SKIP = {("POST", "/api/v1/auth/logout"), ("DELETE", "/api/v1/auth/token")}


def test_api_conforms(st_schema):
    """Each operation gets its own bounded hypothesis run; all failures are reported."""
    failures = []
    operations = [r.ok() for r in st_schema.get_all_operations()]
    assert len(operations) >= 8
    for op in operations:
        if (op.method.upper(), op.path) in SKIP:
            continue

        @given(case=op.as_strategy())
        @settings(max_examples=15, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def run(case):
            case.call_and_validate(headers=st_schema.auth_headers,
                                   checks=[not_a_server_error, response_schema_conformance])

        try:
            run()
        except Exception as exc:  # noqa: BLE001 - collected, reported together below
            failures.append(f"{op.method.upper()} {op.path}: {exc}")
    assert not failures, "\n\n".join(failures)
