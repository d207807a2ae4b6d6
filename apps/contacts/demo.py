"""Demo contacts and tags for ``manage.py seed_demo`` (idempotent)."""

from __future__ import annotations

from apps.contacts.services import contacts_bulk_upsert

PEOPLE = [
    ("Ada", "Lovelace"),
    ("Alan", "Turing"),
    ("Grace", "Hopper"),
    ("Edsger", "Dijkstra"),
    ("Barbara", "Liskov"),
    ("Donald", "Knuth"),
    ("Margaret", "Hamilton"),
    ("Ken", "Thompson"),
    ("Frances", "Allen"),
    ("Dennis", "Ritchie"),
    ("Radia", "Perlman"),
    ("John", "McCarthy"),
    ("Katherine", "Johnson"),
    ("Tim", "Berners-Lee"),
    ("Hedy", "Lamarr"),
    ("Linus", "Torvalds"),
    ("Shafi", "Goldwasser"),
    ("Guido", "van Rossum"),
    ("Sophie", "Wilson"),
    ("Niklaus", "Wirth"),
]


def seed(*, operator, user) -> str:
    """~20 contacts of ``user``; all in "customers", every other one in "newsletter",
    the first five in "vip". Running it again changes nothing."""
    rows = [
        {
            "email": f"{first}.{last}".lower().replace(" ", "") + "@example.com",
            "first_name": first,
            "last_name": last,
            "attributes": {"plan": "pro" if i % 3 == 0 else "free"},
        }
        for i, (first, last) in enumerate(PEOPLE)
    ]
    results = contacts_bulk_upsert(owner=user, rows=rows, tag_names=["customers"], source="demo")
    contacts_bulk_upsert(owner=user, rows=rows[::2], tag_names=["newsletter"], source="demo")
    contacts_bulk_upsert(owner=user, rows=rows[:5], tag_names=["vip"], source="demo")
    created = sum(r["result"] == "created" for r in results)
    return f"{len(rows)} contacts ({created} new), tags customers/newsletter/vip"
