"""parse(): raw bytes -> ParsedMail, on small inline messages and a few corpus files."""

from __future__ import annotations

import base64
import hashlib
import sys

import pytest
from conftest import CORPUS
from conftest import need_corpus

from helpdesk.ingest.htmltext import html_to_text
from helpdesk.ingest.parse import ParsedMail
from helpdesk.ingest.parse import decode_bytes
from helpdesk.ingest.parse import parse
from helpdesk.ingest.parse import strip_mbox


def mail(headers: str, body: bytes | str = b"Hello\n", *, raw_headers: bytes = b"") -> bytes:
    """A message from header lines (LF, ASCII) plus raw header bytes and a body."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    return headers.encode("ascii") + raw_headers + b"\n" + body


def corpus(path: str) -> bytes:
    return need_corpus(path).read_bytes()


# -- headers ------------------------------------------------------------------------------


def test_rfc2047_subject_in_iso_8859_1() -> None:
    parsed = parse(mail("From: a@x.org\nSubject: =?ISO-8859-1?Q?Caf=E9_cr=E8me?= et the\n"))
    assert parsed.subject == "Café crème et the"


def test_rfc2047_utf8_words_split_inside_a_character_are_joined() -> None:
    text = "Réunion d'équipe 日本語".encode()
    with pytest.raises(UnicodeDecodeError):
        text[:2].decode()  # the first word ends in the middle of "é"
    first, second = base64.b64encode(text[:2]).decode(), base64.b64encode(text[2:]).decode()
    parsed = parse(mail(f"From: a@x.org\nSubject: =?UTF-8?B?{first}?=\n =?utf-8?B?{second}?=\n"))
    assert parsed.subject == "Réunion d'équipe 日本語"


def test_encoded_words_in_other_charsets_and_plain_text_between() -> None:
    subject = (
        "Subject: utf8: =?UTF-8?Q?=E4=BD=BF=E3=81=A3=E3=81=A6?= / cp-1251:"
        " =?windows-1251?B?0eXw4+XpINPj6+j26uj1?= / =?unicode-1-1-utf-7?Q?+ANw-bung?=\n"
    )
    parsed = parse(mail("From: a@x.org\n" + subject))
    assert parsed.subject == "utf8: 使って / cp-1251: Сергей Углицких / Übung"


def test_raw_8bit_headers_are_decoded_not_rejected() -> None:
    raw = mail(
        "To: support@x.org\n",
        raw_headers=b"From: Ups R\xc3\xa9mi <r@x.org>\nSubject: contact \xc3\xa9ligibilit\xc3\xa9\n"
        b"X-Old: caf\xe9\n",
    )
    parsed = parse(raw)
    assert parsed.sender == "r@x.org"
    assert parsed.sender_name == "Ups Rémi"
    assert parsed.subject == "contact éligibilité"
    assert parsed.header("x-old") == "café"  # not UTF-8: Windows-1252


def test_raw_8bit_header_takes_the_charset_the_message_declares() -> None:
    subject = "转发：整体提升企业服务水平".encode("gb2312")
    raw = mail(
        "From: a@x.org\nContent-Type: text/plain; charset=gb2312\n",
        "正文".encode("gb2312"),
        raw_headers=b"Subject: " + subject + b"\n",
    )
    parsed = parse(raw)
    assert parsed.subject == "转发：整体提升企业服务水平"
    assert parsed.text == "正文"


def test_addresses_names_and_recipients() -> None:
    raw = mail(
        "From: Smith, John <John.Smith@Example.org>\n"
        'To: "Desk, IT" <it@x.org>, Recipients, =?iso-8859-2?Q?Namedy=F1ski?= (hans@x.org)\n'
        "Cc: Max Kohl | [example.com] <kohl@x.org>\n"
        "Reply-To: <reply@x.org>\n"
    )
    parsed = parse(raw)
    assert (parsed.sender, parsed.sender_name) == ("john.smith@example.org", "Smith, John")
    assert parsed.to == [("Desk, IT", "it@x.org"), ("Namedyński", "hans@x.org")]
    assert parsed.cc == [("Max Kohl | [example.com]", "kohl@x.org")]
    assert parsed.reply_to == [("", "reply@x.org")]


def test_sender_is_the_first_from_that_has_an_address() -> None:
    parsed = parse(mail("From: [??????]\nFrom: =?utf-8?B?6YO955C5?= <ghgb@185.com.cn>\n"))
    assert (parsed.sender, parsed.sender_name) == ("ghgb@185.com.cn", "都琹")
    bare = parse(mail('From: "finances8@loans.example.com"\n'))
    assert bare.sender == "finances8@loans.example.com"
    empty = parse(mail("From: MAILER-DAEMON <>\nReturn-Path: <bounce@x.org>\n"))
    assert empty.sender == "bounce@x.org"


def test_date_message_id_and_thread_headers() -> None:
    raw = mail(
        "From: a@x.org\nDate: Sat, 28 Nov 2026 09:00:00 +0100\n"
        "Message-ID: <abc@x.org>\nIn-Reply-To: <prev@x.org> (Bob's message)\n"
        "References: <root@x.org>\n <prev@x.org>\n"
    )
    parsed = parse(raw)
    assert parsed.date is not None and parsed.date.isoformat() == "2026-11-28T09:00:00+01:00"
    assert parsed.message_id == "<abc@x.org>"
    assert parsed.in_reply_to == ["<prev@x.org>"]
    assert parsed.references == ["<root@x.org>", "<prev@x.org>"]
    bare = parse(mail("From: a@x.org\nMessage-Id: 2020.05D7@x.org\nDate: not a date\n"))
    assert bare.message_id == "<2020.05D7@x.org>"
    assert bare.date is None
    assert "unparseable Date header" in bare.defects


def test_junk_line_and_lost_folding_before_the_body_are_repaired() -> None:
    raw = (
        b"---- Original email message ----\n"
        b"Received: from a by b\nby c with ESMTP\n"
        b"X-Spam: yes\nFrom: a@x.org\nSubject: Contact\n\nthe body\n"
    )
    parsed = parse(raw)
    assert parsed.sender == "a@x.org"
    assert parsed.subject == "Contact"
    assert parsed.text == "the body"
    assert any("junk" in d for d in parsed.defects)
    assert any("refolded 1" in d for d in parsed.defects)


def test_a_body_line_after_headers_without_separator_stays_body() -> None:
    parsed = parse(b"From: a@x.org\nSubject: s\nthis is the body: really\n")
    assert parsed.subject == "s"
    assert "this is the body: really" not in parsed.subject


# -- mbox ---------------------------------------------------------------------------------


def test_strip_mbox_drops_the_from_line_and_unquotes() -> None:
    raw = b"From alice@x.org  Sat Nov 28 03:25:15 2026\nSubject: s\n\n>From here\n>>From there\n"
    assert strip_mbox(raw) == b"Subject: s\n\nFrom here\n>From there\n"
    cr_only = b"From alice@x.org  Sat Nov 28 2026\rSubject: s\r\r>From here\r"
    assert strip_mbox(cr_only) == b"Subject: s\r\rFrom here\r"
    not_mbox = b"Subject: s\n\n>From here\n"
    assert strip_mbox(not_mbox) == not_mbox
    obsolete_header = b"From  : John <j@x.org>\n\nbody\n"
    assert strip_mbox(obsolete_header) == obsolete_header
    assert parse(obsolete_header).sender == "j@x.org"


def test_parse_reads_an_mbox_message() -> None:
    raw = b"From alice@x.org Sat Nov 28 2026\nFrom: Alice <alice@x.org>\n\nline\n>From me\n"
    parsed = parse(raw)
    assert parsed.sender == "alice@x.org"
    assert parsed.text == "line\nFrom me"


# -- bodies and charsets ------------------------------------------------------------------


def test_html_only_mail_gets_a_derived_text() -> None:
    html = (
        "<html><head><title>T</title><style>p {color: red}</style></head><body>"
        "<p>Bonjour&nbsp;<b>Alice</b>,</p><ul><li>un</li><li>deux</li></ul>"
        "<blockquote><p>cit\u00e9</p></blockquote><script>x()</script></body></html>"
    )
    raw = mail("From: a@x.org\nContent-Type: text/html; charset=utf-8\n", html)
    parsed = parse(raw)
    assert parsed.html == html
    assert parsed.text == "Bonjour Alice,\n\n- un\n- deux\n\n> cité"


def test_empty_text_alternative_gets_the_text_of_the_html() -> None:
    raw = mail(
        'From: a@x.org\nContent-Type: multipart/alternative; boundary="b"\n',
        "--b\nContent-Type: text/plain\n\n \n--b\nContent-Type: text/html\n\n"
        "<p>some html text</p>\n--b--\n",
    )
    parsed = parse(raw)
    assert parsed.text == "some html text"
    assert parsed.html == "<p>some html text</p>"
    assert parsed.attachments == []


def test_html_charset_from_meta_when_the_part_declares_none() -> None:
    body = b'<meta http-equiv="Content-Type" content="text/html; charset=koi8-r"><p>'
    raw = mail("From: a@x.org\nContent-Type: text/html\n", body + "Привет".encode("koi8_r"))
    assert parse(raw).text == "Привет"


@pytest.mark.parametrize(
    ("data", "charset", "expected"),
    [
        ("Grüße".encode("latin-1"), "us-ascii", "Grüße"),  # 8-bit under an ASCII label
        ("déjà – “vu”".encode("cp1252"), "iso-8859-1", "déjà – “vu”"),  # the WHATWG reading
        ("déjà".encode(), "iso-8859-1", "déjà"),  # UTF-8 mislabelled as Latin-1
        ("äöü - 差出人".encode() + "äöü".encode("latin-1"), "utf-8", "äöü - 差出人äöü"),
        ("參數設定".encode("gbk"), "gb2312", "參數設定"),  # GBK characters under GB2312
        (b"Hi +ANw-bung", "unicode-1-1-utf-7", "Hi Übung"),
        ("naïve".encode(), "x-no-such-charset", "naïve"),
        ("机房环境法规".encode("gb2312"), None, "机房环境法规"),  # undeclared, EUC-like
        ("äöüß".encode("latin-1"), None, "äöüß"),  # not CJK, not Cyrillic either
        ("Прошу помочь с принтером.".encode("koi8_r"), None, "Прошу помочь с принтером."),
        ("Прошу помочь с принтером.".encode("cp1251"), None, "Прошу помочь с принтером."),
        (b"+2D0-x", "utf-7", "\ufffdx"),  # a lone surrogate: no database would store it
        (b"a\x00b", None, "ab"),  # NUL: PostgreSQL refuses it in text
    ],
)
def test_decode_bytes_repairs_charsets(data: bytes, charset: str | None, expected: str) -> None:
    assert decode_bytes(data, charset) == expected


def test_decode_bytes_uses_the_charsets_declared_elsewhere_in_the_message() -> None:
    assert decode_bytes("Привет".encode("cp1251"), None, ("us-ascii", "windows-1251")) == "Привет"
    assert decode_bytes("ツール".encode("cp932"), None, ("iso-2022-jp",)) == "ツール"
    assert decode_bytes("ツール".encode("cp932"), "iso-2022-jp") == "ツール"  # mislabelled
    assert decode_bytes("Grüße".encode("latin-1"), None, ("us-ascii",)) == "Grüße"


def test_text_body_has_lf_line_ends_and_no_mojibake() -> None:
    raw = (
        b"From: a@x.org\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\nLigne =E9t=E9\r\nsuite=\r\n fin\r\n"
    )
    assert parse(raw).text == "Ligne été\nsuite fin"


def test_apple_mail_text_picture_text_is_one_body() -> None:
    png = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()
    raw = mail(
        'From: a@x.org\nContent-Type: multipart/mixed; boundary="b"\n',
        "--b\nContent-Type: text/plain\n\nText before\n"
        "--b\nContent-Type: image/png; name=shot.png\n"
        "Content-Disposition: inline; filename=shot.png\n"
        f"Content-ID: <shot@x>\nContent-Transfer-Encoding: base64\n\n{png}\n"
        "--b\nContent-Type: text/plain\n\nText after\n--b--\n",
    )
    parsed = parse(raw)
    assert parsed.text == "Text before\n\nText after"
    [image] = parsed.attachments
    assert (image.filename, image.content_id, image.inline) == ("shot.png", "shot@x", True)
    assert image.data == b"\x89PNG\r\n\x1a\nfake"


def test_apple_mail_html_pieces_are_one_html_body() -> None:
    parsed = parse(corpus("otobo/EmailParser/MultipartMixedHTML.eml"))
    assert parsed.html is not None
    assert '<b class="">first</b> part' in parsed.html
    assert "second part äöø" in parsed.html
    assert parsed.text == "first part\n\n\n\nsecond part äöø"  # the text alternative
    assert [a.filename for a in parsed.attachments] == ["1.txt"]


# -- attachments ------------------------------------------------------------------------


def test_rfc2231_filenames_in_any_charset_and_continued() -> None:
    raw = mail(
        'From: a@x.org\nContent-Type: multipart/mixed; boundary="b"\n',
        "--b\nContent-Type: text/plain\n\nsee files\n"
        "--b\nContent-Type: image/jpeg\n"
        "Content-Disposition: attachment; filename*=iso-8859-1''Bestellbest%E4tigung.jpg\n"
        "Content-Transfer-Encoding: base64\n\nAAEC\n"
        "--b\nContent-Type: text/plain\nContent-Disposition: attachment;\n"
        " filename*0*=utf-8''%E6%96%B0%E3%81%97%E3%81%84;\n filename*1=\" file.txt\"\n\nx\n"
        "--b\nContent-Type: image/jpeg\n"
        "Content-Disposition: attachment; filename*=us-ascii''W%F6lbung.jpg\n\nAAEC\n"
        '--b\nContent-Type: application/pdf; name="=?utf-8?Q?R=C3=A9sum=C3=A9.pdf?="\n\n%PDF\n'
        "--b--\n",
    )
    parsed = parse(raw)
    assert [a.filename for a in parsed.attachments] == [
        "Bestellbestätigung.jpg",
        "新しい file.txt",
        "Wölbung.jpg",
        "Résumé.pdf",
    ]
    assert parsed.attachments[0].data == b"\x00\x01\x02"
    assert parsed.text == "see files"


def test_rfc2231_continuations_from_rt() -> None:
    parsed = parse(corpus("rt/emails/rfc2231-attachment-filename-continuations"))
    assert [a.filename for a in parsed.attachments] == ["新しいテキスト ドキュメント.txt"]


def test_attached_message_is_an_eml_and_not_merged_into_the_body() -> None:
    inner = (
        b"From: b@y.org\nSubject: =?utf-8?Q?Probl=C3=A8me?=\nContent-Type: multipart/mixed;"
        b' boundary="in"\n\n--in\nContent-Type: text/plain\n\nInner text\n'
        b"--in\nContent-Type: application/pdf; name=doc.pdf\nContent-Transfer-Encoding: base64\n\n"
        b"JVBERg==\n--in--\n"
    )
    raw = mail(
        'From: a@x.org\nContent-Type: multipart/mixed; boundary="out"\n',
        b"--out\nContent-Type: text/plain\n\nSee below.\n--out\nContent-Type: message/rfc822\n"
        b"Content-Disposition: attachment\n\n" + inner + b"--out--\n",
    )
    parsed = parse(raw)
    assert parsed.text == "See below."
    eml, pdf = parsed.attachments
    assert (eml.filename, eml.content_type) == ("Problème.eml", "message/rfc822")
    assert eml.data == inner.rstrip(
        b"\n"
    )  # the bytes it came with (the boundary's line end is not)
    assert (pdf.filename, pdf.data, pdf.inline) == ("doc.pdf", b"%PDF", False)


def test_transfer_encodings_line_ends_and_uuencode() -> None:
    raw = (
        b'From: a@x.org\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nbody\r\n"
        b"--b\r\nContent-Type: application/pgp-signature; name=signature.asc\r\n\r\n"
        b"-----BEGIN PGP SIGNATURE-----\r\nabc\r\n"
        b"--b\r\nContent-Type: application/octet-stream; name=data.bin\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nAQ0KAg==\r\n"
        b"--b\r\nContent-Type: application/pdf; name=qp.pdf\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n%PDF=0D\r\nline\r\n"
        b"--b\r\nContent-Type: application/msword; name=uu.txt\r\n"
        b"Content-Transfer-Encoding: x-uuencode\r\n\r\n,2&5L;&\\@6F%M;6%D\r\n`\r\n--b--\r\n"
    )
    sig, binary, pdf, uu = parse(raw).attachments
    assert sig.data == b"-----BEGIN PGP SIGNATURE-----\nabc"  # 7bit text: LF
    assert binary.data == b"\x01\r\n\x02"  # base64: bit for bit
    assert pdf.data == b"%PDF\r\r\nline"  # quoted-printable may carry binary: as decoded
    assert uu.data == b"Hello Zammad"  # uuencode without its `begin` line


def test_tnef_winmail_dat_is_unpacked_into_named_files() -> None:
    parsed = parse(corpus("mimekit/tnef/rich-text.eml"))
    names = [a.filename for a in parsed.attachments]
    assert "winmail.dat" not in names
    assert names[0] == "kitten-playing-with-a-christmas-tree.jpg"
    kitten = parsed.attachments[0]
    assert kitten.content_type == "image/jpeg"
    assert kitten.data[:3] == b"\xff\xd8\xff"  # a JPEG, not the TNEF stream
    assert len(kitten.data) == 375081


def test_tnef_body_is_used_when_it_is_all_there_is() -> None:
    parsed = parse(corpus("mimekit/tnef/ukr.eml"))
    assert parsed.attachments == []  # winmail.dat held only the body
    assert parsed.text.startswith("шостий")
    assert parsed.html is not None and "<html>" in parsed.html


def test_zammad_fixture_with_inline_images_and_odd_names() -> None:
    parsed = parse(corpus("zammad/mail073.box"))
    names = [a.filename for a in parsed.attachments]
    assert names == ["Bestellbestätigung_BK18052795.jpg", "Forex Platte ohne Wölbung.jpg"]
    digests = {hashlib.sha256(a.data).hexdigest()[:12] for a in parsed.attachments}
    assert len(digests) == 2
    assert parsed.html is not None and parsed.text


def test_undeclared_gb2312_body_is_read_as_chinese() -> None:
    parsed = parse(corpus("zammad/mail023.box"))
    assert parsed.text.startswith("机房环境法规\n")


def test_koi8_r_without_content_type_is_read_as_russian() -> None:
    parsed = parse(corpus("rt/emails/russian-subject-no-content-type"))
    assert (parsed.subject, parsed.text) == ("тест тест", "ТЕСТ")


# -- robustness ---------------------------------------------------------------------------


MALFORMED = [
    b"",
    b"\n\n\n",
    b"\x00\xff\xfe garbage \x80\x81",
    b"Subject: only a header",
    b"no headers at all, just text\nand more\n",
    b"Content-Type: multipart/mixed\n\nno boundary parameter\n",
    b'Content-Type: multipart/mixed; boundary="x"\n\n--x\nContent-Type: text/plain\n\nunclosed',
    b'Content-Type: text/plain; charset="\x00"\nContent-Transfer-Encoding: base64\n\n!!!@@@',
    b"Content-Type: text/plain\nContent-Transfer-Encoding: x-uuencode\n\nbegin 644 f\n%%%%\n",
    b"Content-Type: message/rfc822\n\n",
    b"Content-Type: application/ms-tnef; name=winmail.dat\n\nnot tnef at all",
    b'From: =?utf-8?B?broken?= <\nTo: ,,,<<>>"\nDate: 99 Foo 99999\n\n',
    b"Content-Type: text/plain; charset=utf-16\n\n\xd8\x00",
]


@pytest.mark.parametrize("raw", MALFORMED)
def test_malformed_mail_never_raises(raw: bytes) -> None:
    parsed = parse(raw)
    assert isinstance(parsed, ParsedMail)
    assert isinstance(parsed.text, str) and isinstance(parsed.subject, str)


def test_deeply_nested_multipart_does_not_raise() -> None:
    depth = 300
    head = "".join(
        f'Content-Type: multipart/mixed; boundary="b{i}"\n\n--b{i}\n' for i in range(depth)
    )
    raw = b"From: a@x.org\n" + head.encode() + b"Content-Type: text/plain\n\ndeep\n"
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(250)  # the stdlib parser recurses per level: it would run out
    try:
        parsed = parse(raw)
    finally:
        sys.setrecursionlimit(limit)
    assert isinstance(parsed, ParsedMail)
    assert parsed.sender == "a@x.org"
    # The parser is not let that deep: the levels past 32 are kept whole, as they came.
    assert not any("RecursionError" in d for d in parsed.defects)
    assert any("nested over 32 levels" in d for d in parsed.defects)
    [nested] = parsed.attachments
    assert (nested.filename, nested.content_type) == ("nested-part.eml", "message/rfc822")
    assert nested.data.startswith(b'Content-Type: multipart/mixed; boundary="b32"\n')
    assert nested.data.endswith(b"\ndeep\n") and nested.data in raw


def test_the_whole_zammad_set_parses_without_falling_back() -> None:
    boxes = sorted(need_corpus("zammad").glob("*.box"))
    assert len(boxes) == 85, f"Zammad corpus incomplete at {CORPUS}"
    for box in boxes:
        parsed = parse(box.read_bytes())
        assert not [d for d in parsed.defects if "failed" in d], (box.name, parsed.defects)


def test_html_to_text_survives_broken_markup() -> None:
    assert html_to_text("<head><title>x</title><body>no closing head") == "no closing head"
    assert html_to_text("<p>un<p>deux<pre>  a\n    b</pre>") == "un\n\ndeux\n\n  a\n    b"
    assert html_to_text("<div>a</div><div><br></div><div>b</div>") == "a\n\nb"
