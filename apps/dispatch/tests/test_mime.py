"""Messages built by apps.dispatch.mime parse back exactly with Python's email package."""

from __future__ import annotations

import binascii
import email
import email.header
import email.policy
import email.utils
import random
import re
import smtplib

import pytest

from apps.dispatch.mime import build_message, make_message_id

WHEN = 1_790_000_000.0  # a fixed Unix time, 2026-09-21


def build(**overrides) -> bytes:
    fields = {
        "from_email": "news@example.com",
        "from_name": "EDM News",
        "to": "zoe@example.org",
        "to_name": "Zoe Dupont",
        "subject": "Your offer",
        "text": "Hello Zoe,\nyour offer is ready.\n",
        "html": "<p>Hello <b>Zoe</b>,</p>\n<p>your offer is ready.</p>\n",
        "message_id": "<1234-abcd@example.com>",
        "date": WHEN,
    }
    fields.update(overrides)
    return build_message(**fields)


def parse(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)


def body_of(message: email.message.EmailMessage, subtype: str) -> str:
    part = message.get_body(preferencelist=(subtype,))
    assert part is not None, f"no text/{subtype} part"
    # On the wire every line ends with CRLF; the parser keeps them as they are.
    return part.get_content().replace("\r\n", "\n")


def assert_wire_format(raw: bytes) -> None:
    """Every physical line ends with CRLF and holds at most 998 octets."""
    assert raw.isascii()
    lines = raw.split(b"\r\n")
    for line in lines:
        assert b"\r" not in line and b"\n" not in line, line[:80]
        assert len(line) <= 998, len(line)
    header_block = raw.split(b"\r\n\r\n", 1)[0]
    for line in header_block.split(b"\r\n"):
        assert len(line) <= 78, line


def raw_header(raw: bytes, name: str) -> str:
    """The header's value unfolded but not decoded, as a strict RFC 2047 reader sees it."""
    header_block = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    unfolded = re.sub(r"\r\n(?=[ \t])", "", header_block)
    for line in unfolded.split("\r\n"):
        field, _, value = line.partition(":")
        if field.lower() == name.lower():
            return value.strip()
    raise AssertionError(f"no {name} header")


def rfc2047_decode(value: str) -> str:
    return str(email.header.make_header(email.header.decode_header(value)))


def test_ascii_message_round_trips_every_header_and_both_bodies():
    raw = build(headers={"List-Unsubscribe": "<https://example.com/u/1>", "X-Campaign": "42"})
    message = parse(raw)

    assert message["From"].addresses[0].display_name == "EDM News"
    assert message["From"].addresses[0].addr_spec == "news@example.com"
    assert message["To"].addresses[0].display_name == "Zoe Dupont"
    assert message["To"].addresses[0].addr_spec == "zoe@example.org"
    assert message["Subject"] == "Your offer"
    assert message["Message-ID"] == "<1234-abcd@example.com>"
    assert message["MIME-Version"] == "1.0"
    assert message["List-Unsubscribe"] == "<https://example.com/u/1>"
    assert message["X-Campaign"] == "42"
    assert message["Date"].datetime.timestamp() == WHEN
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    assert body_of(message, "plain") == "Hello Zoe,\nyour offer is ready.\n"
    assert body_of(message, "html") == "<p>Hello <b>Zoe</b>,</p>\n<p>your offer is ready.</p>\n"
    assert message.defects == []
    assert all(part.defects == [] for part in message.walk())
    assert_wire_format(raw)


def test_date_is_utc_in_rfc5322_form_and_defaults_to_now():
    assert raw_header(build(), "Date") == email.utils.formatdate(WHEN, usegmt=True).replace(
        "GMT", "+0000"
    )
    before = email.utils.formatdate(usegmt=True)
    now = parse(build(date=None))["Date"].datetime.timestamp()
    assert abs(now - email.utils.parsedate_to_datetime(before).timestamp()) <= 2


def test_plain_ascii_bodies_go_as_7bit():
    message = parse(build())
    assert [p["Content-Transfer-Encoding"] for p in message.iter_parts()] == ["7bit", "7bit"]


@pytest.mark.parametrize(
    ("subject", "name", "body"),
    [
        ("Réduction spéciale pour Zoé", "Zoé Dupont-Ñúñez", "Bonjour Zoé,\nçà et là: €5.\n"),
        ("你好，您的订单已发货", "李小龍", "您好，\n您的订单已发货。\n"),
        ("Party time 🎉🎂 — don't miss it", "Ana 😀 Smith", "Cake 🎂 at 5\nsee you 👋\n"),
        ("Mixed: Ünïcødé ελληνικά русский עברית", "Ŝmïth, Ünïcødé", "ελληνικά\nрусский\n"),
    ],
    ids=["accents", "cjk", "emoji", "mixed"],
)
def test_non_ascii_subject_names_and_bodies_round_trip(subject, name, body):
    html = f"<p>{body.replace(chr(10), '<br>')}</p>"
    raw = build(subject=subject, from_name=name, to_name=name, text=body, html=html)
    message = parse(raw)

    assert message["Subject"] == subject
    assert message["From"].addresses[0].display_name == name
    assert message["To"].addresses[0].display_name == name
    assert message["To"].addresses[0].addr_spec == "zoe@example.org"
    assert body_of(message, "plain") == body
    assert body_of(message, "html") == html
    assert [p.get_content_charset() for p in message.iter_parts()] == ["utf-8", "utf-8"]
    assert all(part.defects == [] for part in message.walk())
    assert_wire_format(raw)


def test_long_ascii_subject_is_folded_at_spaces_and_unfolds_to_the_original():
    subject = " ".join(f"word{i}" for i in range(60))
    raw = build(subject=subject)

    assert parse(raw)["Subject"] == subject
    assert raw_header(raw, "Subject") == subject
    assert_wire_format(raw)


def test_long_non_ascii_subject_becomes_several_encoded_words_of_whole_characters():
    subject = "Zoé, voici 😀 votre offre spéciale " * 12 + "李小龍"
    raw = build(subject=subject)

    assert parse(raw)["Subject"] == subject
    words = re.findall(r"=\?utf-8\?B\?([^?]*)\?=", raw_header(raw, "Subject"))
    assert len(words) > 5
    for word in words:
        email.base64mime.decode(word).decode("utf-8")  # each word holds whole characters
    assert_wire_format(raw)


def test_long_non_ascii_display_name_decodes_per_rfc_2047():
    # Python's address parser keeps the folding space between adjacent encoded-words of a
    # display name (RFC 2047 6.2 says to drop it), so decode the raw value as RFC 2047 says.
    name = "Zoé Ünïcødé-Ŝmïth de la Fontaine-Ñúñez 李小龍 😀 " * 3
    name = name.strip()
    raw = build(to_name=name)

    value = raw_header(raw, "To")
    assert value.endswith(" <zoe@example.org>")
    assert rfc2047_decode(value.removesuffix(" <zoe@example.org>")) == name
    assert parse(raw)["To"].addresses[0].addr_spec == "zoe@example.org"
    assert_wire_format(raw)


@pytest.mark.parametrize(
    "name",
    ['Dupont, Zoé "Z"', "Dupont, Zoe", 'The "Best" Shop', "O'Brien", "back\\slash", "a <b> c"],
)
def test_display_names_with_specials_are_quoted_or_encoded(name):
    message = parse(build(from_name=name))
    assert len(message["From"].addresses) == 1
    assert message["From"].addresses[0].display_name == name
    assert message["From"].addresses[0].addr_spec == "news@example.com"


@pytest.mark.parametrize(
    "subject",
    [
        "=?utf-8?q?not_encoded?=",
        "  leading and trailing  ",
        "tab\there",
        "double  space",
        "",
        "bell\x07 and escape\x1b",
        "x" * 1200,
    ],
    ids=["looks-encoded", "blanks", "tab", "double-space", "empty", "controls", "long-run"],
)
def test_awkward_subjects_survive_literally(subject):
    raw = build(subject=subject)
    assert parse(raw)["Subject"] == subject
    assert_wire_format(raw)


def test_lines_longer_than_998_octets_are_quoted_printable_and_round_trip():
    text = "a" * 3000 + "\n" + "short\n" + "é" * 700 + "\n"
    html = "<div>" + "<span>x</span>" * 400 + "</div>"
    raw = build(text=text, html=html)
    message = parse(raw)

    assert [p["Content-Transfer-Encoding"] for p in message.iter_parts()] == [
        "quoted-printable",
        "quoted-printable",
    ]
    assert body_of(message, "plain") == text
    assert body_of(message, "html") == html
    assert max(len(line) for line in raw.split(b"\r\n")) <= 78
    assert_wire_format(raw)


def test_body_edge_cases_round_trip_exactly():
    text = (
        ".leading dot\n.\n..two dots\nFrom the start\ntrailing space \ntrailing tab\t\n"
        "equals = sign =3D\nnul\x00byte\n\n\nno final newline"
    )
    raw = build(text=text, html="")
    assert body_of(parse(raw), "plain") == text
    assert_wire_format(raw)


def test_carriage_returns_in_bodies_are_normalized_to_crlf():
    raw = build(text="one\r\ntwo\rthree\n", html="<p>a</p>\r\n")
    message = parse(raw)
    assert body_of(message, "plain") == "one\ntwo\nthree\n"
    assert body_of(message, "html") == "<p>a</p>\n"
    assert_wire_format(raw)


def test_empty_html_gives_a_single_text_plain_part():
    message = parse(build(html=""))
    assert message.get_content_type() == "text/plain"
    assert not message.is_multipart()
    assert message.get_content() == "Hello Zoe,\r\nyour offer is ready.\r\n"


def test_boundary_is_random_and_absent_from_both_parts():
    boundaries = set()
    for _ in range(20):
        raw = build()
        boundary = parse(raw).get_boundary()
        body = raw.split(b"\r\n\r\n", 1)[1]
        assert body.count(("--" + boundary).encode()) == 3  # two parts and the close
        boundaries.add(boundary)
    assert len(boundaries) == 20


@pytest.mark.parametrize(
    "field",
    ["subject", "from_name", "to_name", "to", "from_email", "message_id"],
)
@pytest.mark.parametrize("newline", ["\r\n", "\n", "\r"])
def test_line_breaks_in_header_values_are_rejected(field, newline):
    values = {
        "subject": f"Hi{newline}Bcc: victim@example.net",
        "from_name": f"Shop{newline}Bcc: victim@example.net",
        "to_name": f"Zoe{newline}Bcc: victim@example.net",
        "to": f"zoe@example.org{newline}Bcc: victim@example.net",
        "from_email": f"news@example.com{newline}Bcc: victim@example.net",
        "message_id": f"<a@b>{newline}Bcc: victim@example.net",
    }
    with pytest.raises(ValueError, match="line break"):
        build(**{field: values[field]})


def test_line_breaks_in_extra_headers_are_rejected():
    with pytest.raises(ValueError, match="line break"):
        build(headers={"List-Unsubscribe": "<https://x/u>\r\nBcc: victim@example.net"})
    with pytest.raises(ValueError, match="not a valid field name"):
        build(headers={"X-Evil\r\nBcc": "victim@example.net"})
    with pytest.raises(ValueError, match="not a valid field name"):
        build(headers={"X Evil": "1"})


@pytest.mark.parametrize("name", ["Subject", "content-type", "Message-ID", "To", "Date"])
def test_extra_headers_cannot_override_written_headers(name):
    with pytest.raises(ValueError, match="written by build_message"):
        build(headers={name: "x"})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("to", "not an address"),
        ("to", "zoé@example.org"),
        ("to", "Zoe <zoe@example.org>"),
        ("from_email", "a@b@c"),
        ("message_id", "no-brackets@example.com"),
        ("message_id", "<missing-at>"),
    ],
)
def test_malformed_addresses_and_message_ids_are_rejected(field, value):
    with pytest.raises(ValueError, match="not"):
        build(**{field: value})


def test_non_ascii_extra_header_values_are_encoded():
    raw = build(headers={"X-Campaign-Name": "Soldes d'été ☀️"})
    assert parse(raw)["X-Campaign-Name"] == "Soldes d'été ☀️"
    assert_wire_format(raw)


def test_make_message_id_is_unique_and_well_formed():
    ids = {make_message_id("mail.example.com") for _ in range(100)}
    assert len(ids) == 100
    for message_id in ids:
        assert re.fullmatch(r"<[0-9a-f-]{36}@mail\.example\.com>", message_id)
    message_id = ids.pop()
    assert parse(build(message_id=message_id))["Message-ID"] == message_id
    with pytest.raises(ValueError, match="host name"):
        make_message_id("bad domain\r\n")


def test_random_unicode_round_trips():
    rng = random.Random(5)
    alphabet = "abcXYZ 019 ,.;:<>\"'()=?_-@\\/é€ßñ李小龍😀👋🏽\u200b\t"
    for _ in range(50):
        subject = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 120)))
        name = "".join(rng.choice(alphabet.replace("\t", "")) for _ in range(rng.randint(1, 12)))
        lines = [
            "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 200)))
            for _ in range(rng.randint(1, 8))
        ]
        text = "\n".join(lines)
        html = "<p>" + "<br>\n".join(lines) + "</p>"
        raw = build(subject=subject, to_name=name, text=text, html=html)
        message = parse(raw)
        assert message["Subject"] == subject
        assert message["To"].addresses[0].display_name == name.strip()
        assert body_of(message, "plain") == text
        assert body_of(message, "html") == html
        assert_wire_format(raw)


def test_message_is_intact_after_a_real_smtp_exchange(smtp_sink):
    text = ".starts with a dot\n.\n..\nend\n" + "é" * 1500 + "\n"
    html = "<p>.dot</p>\n.\n<p>Zoé 😀</p>"
    raw = build(subject="Zoé 😀 .dot", text=text, html=html)

    with smtplib.SMTP("127.0.0.1", smtp_sink.port) as client:
        refused = client.sendmail("news@example.com", ["zoe@example.org"], raw)
    assert refused == {}

    [received] = smtp_sink.handler.messages
    assert received.rcpt_tos == ["zoe@example.org"]
    assert received.data.replace(b"\r\n", b"\n") == raw.replace(b"\r\n", b"\n")
    message = parse(received.data)
    assert message["Subject"] == "Zoé 😀 .dot"
    assert body_of(message, "plain") == text
    assert body_of(message, "html") == html


def test_quoted_printable_bodies_decode_exactly_and_keep_lines_within_76():
    rng = random.Random(7)
    alphabet = "ab =\t.é€😀\x00\x1b\x7f=="
    for _ in range(100):
        # Few long lines are soft-broken in Python, many go through binascii: test both.
        text = "\n".join(
            "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 300)))
            for _ in range(rng.choice((1, 4, 30)))
        )
        raw = build(text=text, html="")
        encoded = raw.split(b"\r\n\r\n", 1)[1]
        if b"Content-Transfer-Encoding: 7bit" in raw:
            assert encoded.decode("ascii").replace("\r\n", "\n") == text
            continue
        assert all(len(line) <= 76 for line in encoded.split(b"\r\n"))
        assert not re.search(rb"[ \t]\r\n|[ \t]$", encoded)  # no blank ends a line
        decoded = binascii.a2b_qp(encoded).replace(b"\r\n", b"\n")
        assert decoded.decode("utf-8") == text
