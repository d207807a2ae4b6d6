"""``manage.py check_tag_consistency [--repair] [--owner USER]``.

Proves that every tag's ``contact_count`` equals its real number of members and that no
membership or contact points at nothing. Without ``--repair`` a problem is a
``CommandError`` (exit status 1) listing it; with ``--repair`` the orphans are deleted
and the counts recomputed under lock, then checked again.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from apps.contacts.selectors import ConsistencyReport, tag_consistency_report
from apps.contacts.services import tag_consistency_repair


class Command(BaseCommand):
    help = "Check (and with --repair fix) tag contact counts and orphaned membership rows."

    def add_arguments(self, parser):
        parser.add_argument("--repair", action="store_true", help="fix what is found")
        parser.add_argument("--owner", help="only this user's tags (username)")

    def _describe(self, report: ConsistencyReport) -> None:
        for tag_id, name, stored, real in report.wrong_counts[:50]:
            self.stdout.write(f"tag #{tag_id} {name!r}: contact_count {stored}, real {real}")
        if len(report.wrong_counts) > 50:
            self.stdout.write(f"... and {len(report.wrong_counts) - 50} more tags")
        if report.orphan_memberships:
            self.stdout.write(
                f"{report.orphan_memberships} membership(s) of a missing tag or contact"
            )
        if report.cross_owner_memberships:
            self.stdout.write(
                f"{report.cross_owner_memberships} membership(s) joining two owners' rows"
            )
        if report.orphan_contacts:
            self.stdout.write(f"{report.orphan_contacts} contact(s) of a missing owner")

    def handle(self, *args, repair, owner, **options):
        user = None
        if owner:
            try:
                user = get_user_model().objects.get(username=owner)
            except get_user_model().DoesNotExist as exc:
                raise CommandError(f"--owner: no user named {owner!r}") from exc
        report = tag_consistency_report(owner=user)
        if report.ok:
            self.stdout.write(self.style.SUCCESS("OK: every tag count is exact, no orphans"))
            return
        self._describe(report)
        if not repair:
            raise CommandError("inconsistencies found; run with --repair to fix them")
        fixed = tag_consistency_repair(tag_ids=[row[0] for row in report.wrong_counts])
        self.stdout.write(", ".join(f"{k}: {v}" for k, v in fixed.items()))
        if not tag_consistency_report(owner=user).ok:
            raise CommandError("still inconsistent after repair (concurrent writes?)")
        self.stdout.write(self.style.SUCCESS("repaired: every tag count is exact, no orphans"))
