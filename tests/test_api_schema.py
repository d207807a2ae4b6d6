"""The API against its own OpenAPI schema, from the outside: schemathesis sends generated
requests to a live server (a threaded WSGI server on loopback, on the test database) as a
tenant and as an operator at once, and every answer must be what the schema documents —
no server error, no undocumented status or content type, every body in its schema.

A bounded run (a fixed seed, a few examples per operation, a time budget) keeps it a part
of every ``make test``; ``bench/bench_api_fuzz.py`` is the long run.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from apps.core.services import tenant_create
from tests.api_fuzz import ROOT, finish, start_fuzz

# Per token; both run at once. The budget bounds each run's fuzzing (schemathesis stops
# generating when it is spent); the timeout is the test's last resort. On a quiet machine
# the examples are done long before the budget; it binds only on a loaded one, where a
# small budget could be spent before the first generated case.
EXAMPLES = 3
BUDGET_SECONDS = 90
TIMEOUT_SECONDS = 240


def _tokens() -> dict[str, str]:
    tenant, _ = tenant_create(username="fuzz-tenant", password="Fz-9pass-word-x")
    operator = get_user_model().objects.create_superuser(
        "fuzz-operator", "operator@example.com", "Fz-9pass-word-y"
    )
    return {
        who: Token.objects.get_or_create(user=user)[0].key
        for who, user in (("tenant", tenant), ("operator", operator))
    }


@pytest.mark.django_db(transaction=True)
def test_every_answer_of_the_api_is_what_its_schema_documents(live_server):
    runs = {
        who: start_fuzz(
            live_server.url,
            token,
            examples=EXAMPLES,
            phases="examples,fuzzing,stateful",
            seed=20261201,
            max_time=BUDGET_SECONDS,
        )
        for who, token in _tokens().items()
    }
    results = [finish(who, process, timeout=TIMEOUT_SECONDS) for who, process in runs.items()]
    failed = [run for run in results if run.returncode != 0]
    assert not failed, "\n\n".join(
        f"--- as the {run.who} (exit {run.returncode})\n{run.failures}\n{run.summary}"
        for run in failed
    )
    for run in results:
        assert " passed" in run.summary or "No issues found" in run.summary, run.summary


# --- what the schema says ----------------------------------------------------------------


@pytest.fixture(scope="module")
def schema() -> dict:
    from drf_spectacular.generators import SchemaGenerator

    # What /api/schema/ serves (the served document is the public one), as JSON.
    return json.loads(json.dumps(SchemaGenerator().get_schema(request=None, public=True)))


def _resolve(schema: dict, node: dict) -> dict:
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def _ok_body(schema: dict, path: str, method: str = "get") -> dict:
    return _resolve(
        schema,
        schema["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"],
    )


@pytest.mark.parametrize(
    "path",
    ["/api/contacts/", "/api/tags/", "/api/tags/{id}/contacts/", "/api/imports/", "/api/dlq"],
)
def test_a_list_endpoint_is_documented_as_the_page_it_answers(schema, path):
    page = _ok_body(schema, path)
    assert page["type"] == "object"
    assert {"next", "results"} <= set(page["properties"])
    assert page["properties"]["results"]["type"] == "array"


def test_every_operation_documents_the_errors_it_can_answer_in_the_one_shape(schema):
    error = {"$ref": "#/components/schemas/Error"}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            wanted = {"400", "404", "414"}
            if path != "/api/health":
                wanted |= {"401", "403", "429"}
            if "requestBody" in operation:
                wanted |= {"413", "415"}
            assert wanted <= set(responses), (method, path, sorted(responses))
            for status in wanted - {"414"}:
                body = responses[status]["content"]["application/json"]["schema"]
                assert body == error or status in {"400"}, (method, path, status)


def test_the_schema_names_formats_and_required_fields(schema):
    components = schema["components"]["schemas"]
    assert components["ContactInputRequest"]["properties"]["email"]["format"] == "email"
    assert "name" in components["TagInputRequest"]["required"]
    assert "name" not in components.get("PatchedTagInputRequest", {}).get("required", [])
    assert components["Contact"]["properties"]["created_at"]["format"] == "date-time"


def test_a_tag_without_a_name_is_refused_naming_the_field(api):
    response = api.post("/api/tags/", {"parent": None}, format="json")
    assert response.status_code == 400
    assert "name" in response.json()["errors"]


def test_a_delete_of_an_unknown_api_url_is_a_json_404_not_a_csrf_page(api):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.cookies["sessionid"] = "whatever"
    response = client.delete("/api/contacts/null,null/")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json()["code"] == "not_found"


_CONCURRENT_SCHEMA = """
import threading
import django
django.setup()
from django.contrib.auth import get_user_model
from django.test import RequestFactory
from django.urls import resolve
from rest_framework.test import force_authenticate

view = resolve("/api/schema/").func
barrier = threading.Barrier(6)
codes = []

def fetch():
    request = RequestFactory().get("/api/schema/")
    force_authenticate(request, user=get_user_model()(pk=1, is_superuser=True))
    barrier.wait()
    try:
        codes.append(view(request).status_code)
    except Exception as exc:
        codes.append(type(exc).__name__)

threads = [threading.Thread(target=fetch) for _ in range(6)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(sorted(map(str, codes)))
"""


def test_the_first_schema_requests_of_a_threaded_server_at_once_all_answer_200():
    from apps.core.database import child_env

    done = subprocess.run(
        [sys.executable, "-c", _CONCURRENT_SCHEMA],
        cwd=ROOT,
        env=child_env(DEBUG="1", LOG_LEVEL="CRITICAL", DJANGO_SETTINGS_MODULE="edm.settings"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout.strip() == str(["200"] * 6), done.stdout + done.stderr[-2000:]


def test_a_suppression_that_exists_already_is_documented_as_the_200_it_answers(schema):
    responses = schema["paths"]["/api/suppressions/"]["post"]["responses"]
    assert {"200", "201"} <= set(responses)


def test_a_request_line_too_long_for_the_web_server_is_documented_as_its_html_414(schema):
    response = schema["paths"]["/api/contacts/"]["get"]["responses"]["414"]
    assert "text/html" in response["content"]
