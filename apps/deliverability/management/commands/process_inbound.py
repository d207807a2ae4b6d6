"""Read bounces (DSN), complaints (ARF) and mailto unsubscribes from a folder of
``.eml`` files, an mbox file or an IMAP mailbox, and act on them.

    manage.py process_inbound --folder DIR
    manage.py process_inbound --mbox FILE
    manage.py process_inbound --imap HOST [--port 993] --user U [--mailbox INBOX]
                              [--starttls | --plain]   (password in EDM_IMAP_PASSWORD)

Every message is kept in the database (admin: Inbound messages) with what was made of
it; files are left where they are and a message read twice is processed once. From IMAP,
unseen messages are read and flagged seen; none is deleted.
"""

from __future__ import annotations

import imaplib
import mailbox
import os
from collections import Counter
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from apps.deliverability.inbound import inbound_message_process


class Command(BaseCommand):
    help = "Process DSN / ARF / unsubscribe messages from a folder, an mbox or IMAP."

    def add_arguments(self, parser) -> None:
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--folder", help="a folder of .eml files")
        source.add_argument("--mbox", help="an mbox file")
        source.add_argument("--imap", metavar="HOST", help="an IMAP server")
        parser.add_argument("--port", type=int, default=0)
        parser.add_argument("--user", default="")
        parser.add_argument("--mailbox", default="INBOX")
        security = parser.add_mutually_exclusive_group()
        security.add_argument("--starttls", action="store_true")
        security.add_argument("--plain", action="store_true", help="no TLS (loopback only)")

    def handle(self, *args, **options) -> None:
        counts: Counter[str] = Counter()
        if options["folder"]:
            folder = Path(options["folder"])
            if not folder.is_dir():
                raise CommandError(f"--folder {folder}: not a folder")
            for path in sorted(folder.glob("*.eml")):
                self._one(path.read_bytes(), f"folder:{path}", counts)
        elif options["mbox"]:
            path = Path(options["mbox"])
            if not path.is_file():
                raise CommandError(f"--mbox {path}: no such file")
            box = mailbox.mbox(path, create=False)
            for key in box.keys():
                self._one(box.get_bytes(key), f"mbox:{path}#{key}", counts)
        else:
            self._imap(options, counts)
        summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "nothing"
        self.stdout.write(f"process_inbound: {summary}")

    def _one(self, raw: bytes, source: str, counts: Counter) -> None:
        stored = inbound_message_process(raw=raw, source=source)
        counts["already seen" if stored is None else stored.status] += 1

    def _imap(self, options, counts: Counter) -> None:
        host, user = options["imap"], options["user"]
        password = os.environ.get("EDM_IMAP_PASSWORD", "")
        if not user or not password:
            raise CommandError("--imap needs --user and the password in EDM_IMAP_PASSWORD")
        try:
            if options["plain"] or options["starttls"]:
                client = imaplib.IMAP4(host, options["port"] or 143)
                if options["starttls"]:
                    client.starttls()
            else:
                client = imaplib.IMAP4_SSL(host, options["port"] or 993)
            client.login(user, password)
            status, _ = client.select(options["mailbox"])
            if status != "OK":
                raise CommandError(f"--mailbox {options['mailbox']}: cannot be selected")
            _, data = client.search(None, "UNSEEN")
            for number in (data[0] or b"").split():
                _, parts = client.fetch(number, "(BODY.PEEK[])")
                raw = next((p[1] for p in parts if isinstance(p, tuple)), None)
                if raw is None:
                    continue
                self._one(raw, f"imap:{user}@{host}/{options['mailbox']}#{number.decode()}", counts)
                client.store(number, "+FLAGS", "\\Seen")
            client.logout()
        except (OSError, imaplib.IMAP4.error) as exc:
            raise CommandError(f"--imap {host}: {exc}") from None
