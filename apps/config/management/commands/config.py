"""``manage.py config export|import FILE|diff FILE|set KEY VALUE``: promote configuration.

* ``export [--output FILE]`` - every registered key's value as JSON (stdout by default).
* ``import FILE --reason TEXT [--user NAME]`` - validate every value first, then apply
  all of them in one audited transaction, or none (each bad key is named).
* ``diff FILE`` - what ``import`` would change (``key: old -> new``) and what it would
  refuse; changes nothing. Exit status 0 either way.
* ``set KEY VALUE --reason TEXT`` - one key (VALUE is JSON, or plain text for strings).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.config import selectors, services
from apps.core.errors import ApplicationError


def _show(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


class Command(BaseCommand):
    help = "Export, import, diff or set the system configuration (JSON)."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        export = sub.add_parser("export", help="print every key's value as JSON")
        export.add_argument("--output", "-o", help="write to this file instead of stdout")
        for name, text in (
            ("import", "apply a JSON export, all or nothing"),
            ("diff", "show what importing FILE would change"),
        ):
            action = sub.add_parser(name, help=text)
            action.add_argument("file", help="a JSON file written by `config export` (- for stdin)")
            if name == "import":
                self._audit_arguments(action)
        setter = sub.add_parser("set", help="set one key")
        setter.add_argument("key")
        setter.add_argument("value", help="JSON (5, true, [1,2]) or plain text")
        self._audit_arguments(setter)

    @staticmethod
    def _audit_arguments(parser: CommandParser) -> None:
        parser.add_argument("--reason", required=True, help="why (kept in the history)")
        parser.add_argument("--user", help="username recorded as the author of the change")

    def handle(self, *args, action: str, **options) -> None:
        try:
            getattr(self, f"_{action}")(**options)
        except ValidationError as exc:
            lines = [f"  {key}: {'; '.join(reasons)}" for key, reasons in exc.message_dict.items()]
            raise CommandError("nothing changed; invalid values:\n" + "\n".join(lines)) from None
        except ApplicationError as exc:
            raise CommandError(f"{exc.field + ': ' if exc.field else ''}{exc.message}") from None

    def _export(self, *, output: str | None, **options) -> None:
        text = json.dumps(selectors.config_export(), indent=2, sort_keys=True) + "\n"
        if output:
            Path(output).write_text(text)
            self.stderr.write(f"wrote {len(selectors.config_export()['values'])} keys to {output}")
        else:
            self.stdout.write(text, ending="")

    def _import(self, *, file: str, reason: str, user: str | None, **options) -> None:
        changes = services.config_import(
            data=self._read(file), reason=reason, actor=self._user(user)
        )
        for change in changes:
            self.stdout.write(f"{change.key}: {_show(change.old)} -> {_show(change.new)}")
        self.stdout.write(self.style.SUCCESS(f"{len(changes)} key(s) changed"))

    def _diff(self, *, file: str, **options) -> None:
        values = services.import_values(self._read(file))
        changes, errors = services.config_diff(values)
        for change in changes:
            self.stdout.write(f"{change.key}: {_show(change.old)} -> {_show(change.new)}")
        for key, reason in sorted(errors.items()):
            self.stdout.write(f"{key}: INVALID ({reason})")
        self.stdout.write(f"{len(changes)} change(s), {len(errors)} invalid")

    def _set(self, *, key: str, value: str, reason: str, user: str | None, **options) -> None:
        try:
            parsed: Any = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        change = services.config_set(key=key, value=parsed, reason=reason, actor=self._user(user))
        if change is None:
            self.stdout.write(f"{key} unchanged")
        else:
            self.stdout.write(f"{key}: {_show(change.old)} -> {_show(change.new)}")

    def _read(self, file: str) -> Any:
        try:
            text = sys.stdin.read() if file == "-" else Path(file).read_text()
        except OSError as exc:
            raise CommandError(f"cannot read {file}: {exc.strerror}") from None
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise CommandError(f"{file}: not JSON (line {exc.lineno}: {exc.msg})") from None

    @staticmethod
    def _user(username: str | None):
        if not username:
            return None
        User = get_user_model()
        try:
            return User.objects.get(**{User.USERNAME_FIELD: username})
        except User.DoesNotExist:
            raise CommandError(f"--user: no user named {username!r}") from None
