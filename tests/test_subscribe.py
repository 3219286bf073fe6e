"""The subscribe form and double opt-in, through the real app, database and sending path."""

from __future__ import annotations

import re
import time
from dataclasses import replace
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from itsdangerous import TimestampSigner
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from outreach import subscriptions, web
from outreach.config import Settings
from outreach.contacts import forget, get_contact
from outreach.models import ConsentRecord, Contact, Delivery, Subscription, Suppression
from outreach.suppressions import suppress
from outreach.web import create_app
from outreach.welcome import install
from tests.conftest import write
from tests.sending_helpers import drain, settings_for
from tests.subscribe_helpers import (
    SUBSCRIBE,
    confirm_link,
    form_token,
    html_of,
    outbox_messages,
    post_form,
    queued_confirmations,
    subscribe_project,
)

ADDRESS = "new.person@gangneung.example.kr"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    subscribe_project(tmp_path)
    return tmp_path


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return settings_for(db_url, tmp_path)


@pytest.fixture
def client(settings: Settings, project: Path) -> FlaskClient:
    return create_app(settings, project).test_client()


def contacts(session: Session) -> int:
    session.commit()
    return session.scalar(select(func.count()).select_from(Contact)) or 0


def path_of(url: str) -> str:
    return "/" + url.split("/", 3)[3]


def test_a_person_subscribes_in_korean_confirms_and_is_welcomed(
    client: FlaskClient, settings: Settings, session: Session, project: Path
) -> None:
    install(project / "campaigns" / "welcome.yaml", settings, session)
    form = client.get("/subscribe", headers={"Accept-Language": "ko-KR,ko;q=0.9,en;q=0.5"})
    page = form.get_data(as_text=True)
    assert form.status_code == 200 and '<html lang="ko">' in page
    assert "시티넷 뉴스레터와 행사 안내를 이메일로 받는 데 동의합니다" in page  # consent text
    assert "Set-Cookie" not in form.headers
    answer = post_form(client)
    assert answer.status_code == 200 and "받은편지함을 확인해 주세요" in answer.get_data(
        as_text=True
    )
    assert contacts(session) == 0, "nobody is a subscriber before confirming"
    assert queued_confirmations(session, ADDRESS) == 1
    drain(settings, session, "_confirmation")
    (message,) = outbox_messages(settings.outbox, "_confirmation")
    assert message["To"].addresses[0].addr_spec == ADDRESS
    assert message["Subject"] == "구독 확인 요청: 시티넷 사무국"
    assert "구독 확인하기" in html_of(message)
    link = path_of(confirm_link(message))
    # A mail scanner following the link changes nothing.
    shown = client.get(link)
    assert shown.status_code == 200 and 'id="confirm"' in shown.get_data(as_text=True)
    assert contacts(session) == 0
    done = client.post(link)
    page = done.get_data(as_text=True)
    assert done.status_code == 200 and "구독이 확인되었습니다" in page
    assert "시티넷 사무국" in page and re.search(r"\d{4}-\d{2}-\d{2}", page)  # Art. 50(7)
    session.commit()
    contact = get_contact(session, ADDRESS)
    assert (contact.name, contact.organisation, contact.language) == ("이서연", "강릉시", "ko")
    assert (contact.consent, contact.consent_source, contact.consent_version) == (
        "opt-in",
        "form",
        "2026-12",
    )
    assert contact.tag_names == ["newsletter"]
    records = session.scalars(select(ConsentRecord)).all()
    assert [(r.kind, r.source, r.text_version) for r in records] == [("opt-in", "form", "2026-12")]
    drain(settings, session, "welcome")
    (welcome,) = outbox_messages(settings.outbox, "welcome")
    assert welcome["To"].addresses[0].addr_spec == ADDRESS
    assert welcome["Subject"].startswith("시티넷에 오신 것을 환영합니다")
    # Confirming again changes nothing and mails nobody twice.
    again = client.post(link)
    assert again.status_code == 200 and "구독이 확인되었습니다" in again.get_data(as_text=True)
    session.commit()
    assert session.scalar(select(func.count()).select_from(ConsentRecord)) == 1
    assert (
        session.scalar(
            select(func.count()).select_from(Delivery).where(Delivery.contact_id == contact.id)
        )
        == 1
    )


def test_the_answer_is_the_same_for_every_address(
    client: FlaskClient, settings: Settings, session: Session
) -> None:
    suppress(session, "bounced@example.org", "bounced")
    suppress(session, "left@example.org", "unsubscribed")
    session.add(Contact(email="member@example.org", consent="opt-in", attributes={}))
    session.commit()
    cases = [
        ("fresh@example.org", 1),
        ("fresh@example.org", 1),  # pending: a second confirmation
        ("member@example.org", 1),  # subscribed already
        ("left@example.org", 1),  # their own unsubscribe: a confirmation can undo it
        ("bounced@example.org", 0),  # never mailed again
        ("fresh@example.org", 1),
        ("fresh@example.org", 0),  # the fourth today: over the limit
    ]
    bodies = set()
    for address, queued in cases:
        before = queued_confirmations(session, address)
        response = post_form(client, email=address)
        assert response.status_code == 200, address
        bodies.add(response.get_data())
        assert queued_confirmations(session, address) - before == queued, address
    assert len(bodies) == 1


def test_confirmation_goes_to_an_unsubscribed_address_and_lifts_only_that(
    client: FlaskClient, settings: Settings, session: Session
) -> None:
    suppress(session, ADDRESS, "unsubscribed")
    session.commit()
    post_form(client)
    drain(settings, session, "_confirmation")
    (message,) = outbox_messages(settings.outbox, "_confirmation")
    client.post(path_of(confirm_link(message)))
    session.commit()
    assert session.scalar(select(Suppression).where(Suppression.email == ADDRESS)) is None
    # A bounce after the request is not lifted by the confirmation.
    other = "later.bounced@example.org"
    post_form(client, email=other)
    session.commit()
    drain(settings, session, "_confirmation")
    suppress(session, other, "bounced")
    session.commit()
    message = next(
        m
        for m in outbox_messages(settings.outbox, "_confirmation")
        if m["To"].addresses[0].addr_spec == other
    )
    blocked = client.post(path_of(confirm_link(message)))
    assert "보낼 수 없습니다" in blocked.get_data(as_text=True)
    session.commit()
    assert session.scalar(select(Suppression.reason).where(Suppression.email == other)) == "bounced"
    assert session.scalar(select(Contact).where(Contact.email == other)) is None


def _token(settings: Settings, payload: str, age: float = 0) -> str:
    class Then(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time() - age)

    assert settings.secret_key is not None
    return Then(settings.secret_key, salt="outreach.confirm").sign(payload).decode()


@pytest.mark.parametrize(
    "which", ["expired", "forged", "altered", "unknown", "truncated", "id only", "other time"]
)
def test_bad_confirmation_links_get_the_bilingual_400(
    client: FlaskClient, settings: Settings, session: Session, which: str
) -> None:
    post_form(client)
    session.commit()
    row = session.scalar(select(Subscription))
    assert row is not None
    reference = subscriptions.reference(row)
    number, stamp = reference.split(".")
    good = _token(settings, reference)
    assert good == subscriptions.ConfirmTokens(settings).sign(row)
    token = {
        "expired": _token(settings, reference, age=8 * 86400),
        "forged": TimestampSigner("another-key-0123456789abcdef0123456789", salt="outreach.confirm")
        .sign(reference)
        .decode(),
        "altered": good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB"),
        "unknown": _token(settings, f"999999.{stamp}"),
        "truncated": good[:-8],
        # The form of links before they named the request's time: the number alone.
        "id only": _token(settings, number),
        "other time": _token(settings, f"{number}.{int(stamp) + 1}"),
    }[which]
    for method in ("get", "post"):
        response = getattr(client, method)(f"/confirm/{token}")
        text = response.get_data(as_text=True)
        assert response.status_code == 400, (which, method)
        assert "잘못된 링크" in text and "not valid" in text
    assert contacts(session) == 0
    # The genuine link still works.
    assert client.post(f"/confirm/{good}").status_code == 200
    assert contacts(session) == 1


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"consent": ""}, "메일 수신에 동의하시면 확인란을 선택해 주세요."),
        ({"email": "not an address"}, "올바른 이메일 주소가 아닙니다."),
        # Valid by RFC 6531, but only an SMTPUTF8 server takes it, and we send no SMTPUTF8.
        ({"email": "김민지@suwon.example.org"}, "올바른 이메일 주소가 아닙니다."),
        ({"email": ""}, "이메일 주소를 입력해 주세요."),
        ({"name": "가" * 301}, "300자 이내로"),
        ({"organisation": "x" * 5000}, "300자 이내로"),
        ({"name": "Evil\x1b[31mName"}, "사용할 수 없는 문자"),
        ({"email": "a@b.example.org\r\nBcc: x@y.org"}, "사용할 수 없는 문자"),
        ({"language": "tlh"}, "받으실 언어를 선택해 주세요."),
        ({"token": ""}, "입력 양식의 유효 시간이 지났습니다"),
        ({"token": "forged.token"}, "입력 양식의 유효 시간이 지났습니다"),
    ],
)
def test_bad_input_gets_the_form_again_in_korean_and_queues_nothing(
    client: FlaskClient, session: Session, fields: dict[str, str], error: str
) -> None:
    response = post_form(client, **fields)
    page = response.get_data(as_text=True)
    assert response.status_code == 400 and error in page
    assert '<html lang="ko">' in page and 'name="token"' in page and 'id="subscribe"' in page
    assert queued_confirmations(session) == 0
    english = post_form(client, lang="en", consent="")
    assert "Tick the box to agree to receive our email." in english.get_data(as_text=True)


def test_a_form_token_from_another_client_does_not_fit(
    settings: Settings, project: Path, session: Session
) -> None:
    app = create_app(settings, project)
    theirs = app.test_client()
    token = form_token(theirs)
    mine = app.test_client()
    response = mine.post(
        "/subscribe",
        data={"token": token, "email": ADDRESS, "language": "ko", "consent": "yes", "lang": "ko"},
        environ_base={"REMOTE_ADDR": "203.0.113.9"},
    )
    assert response.status_code == 400 and queued_confirmations(session) == 0


def test_the_honeypot_answers_the_same_and_queues_nothing(
    client: FlaskClient, session: Session
) -> None:
    human = post_form(client, email="someone.else@example.org")
    robot = post_form(client, website="https://spam.example.com")
    assert robot.status_code == 200 and robot.get_data() == human.get_data()
    assert queued_confirmations(session, ADDRESS) == 0


def test_an_oversized_body_is_refused(client: FlaskClient, session: Session) -> None:
    response = post_form(client, organisation="x" * 20_000)
    assert response.status_code == 413
    assert queued_confirmations(session) == 0


def test_the_per_client_limit_holds(settings: Settings, tmp_path: Path, session: Session) -> None:
    subscribe_project(tmp_path, SUBSCRIBE + "limits: {per_client_per_hour: 3}\n")
    client = create_app(settings, tmp_path).test_client()
    token = form_token(client)
    codes = [
        post_form(client, token=token, email=f"p{i}@example.org").status_code for i in range(5)
    ]
    assert codes == [200, 200, 200, 429, 429]
    assert queued_confirmations(session) == 3
    limited = post_form(client, token=token, email="p9@example.org")
    assert "요청이 너무 많습니다" in limited.get_data(as_text=True)
    other = create_app(settings, tmp_path).test_client()
    response = other.post(
        "/subscribe",
        data={"token": token},
        environ_base={"REMOTE_ADDR": "198.51.100.7"},
    )
    assert response.status_code == 400  # another client is not limited by the first


@pytest.mark.parametrize("proxies", [0, 1])
def test_behind_a_proxy_the_limit_is_per_visitor(
    settings: Settings, tmp_path: Path, session: Session, proxies: int
) -> None:
    """Behind nginx every request comes from the proxy's address: with OUTREACH_PROXIES=1
    the limit counts the visitor that X-Forwarded-For names, and only the proxy's own entry
    of that header is believed."""
    subscribe_project(tmp_path, SUBSCRIBE + "limits: {per_client_per_hour: 2}\n")
    app = create_app(replace(settings, proxies=proxies), tmp_path)

    def post(visitor: str, forged: str = "") -> int:
        client = app.test_client()
        forwarded = f"{forged}, {visitor}" if forged else visitor
        headers = {"X-Forwarded-For": forwarded}
        proxy = {"REMOTE_ADDR": "10.0.0.2"}  # every request arrives from the proxy
        page = client.get("/subscribe?lang=ko", headers=headers, environ_base=proxy)
        token = re.search(r'name="token" value="([^"]+)"', page.get_data(as_text=True))
        assert token is not None
        data = {
            "token": token.group(1),
            "lang": "ko",
            "email": f"{visitor}@example.org",
            "language": "ko",
            "consent": "yes",
            "website": "",
        }
        answer = client.post("/subscribe", data=data, headers=headers, environ_base=proxy)
        return answer.status_code

    first = [post("198.51.100.1") for _ in range(2)]
    second = post("198.51.100.2")
    forged = post("198.51.100.1", forged="203.0.113.50")
    if proxies:
        assert first == [200, 200] and second == 200 and forged == 429
    else:
        assert first == [200, 200] and second == 429  # one limit for everyone behind it


def test_no_subscribe_file_no_form(settings: Settings, tmp_path: Path) -> None:
    client = create_app(settings, tmp_path).test_client()
    assert client.get("/subscribe").status_code == 404
    assert client.post("/subscribe", data={"email": ADDRESS}).status_code == 404


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ("consent: {version: 1}\n", "consent.text"),
        ("consent: {version: 1, text: {ko: 동의}}\n", "give the consent text in en"),
        (SUBSCRIBE + "colour: blue\n", "unknown key colour"),
        (SUBSCRIBE.replace('from: "시티넷 사무국 <news@citynet-ap.org>"\n', ""), "OUTREACH_FROM"),
        (
            SUBSCRIBE.replace("news@citynet-ap.org", "소식@citynet-ap.org"),
            "non-ASCII characters before the @",
        ),
        (
            SUBSCRIBE.replace("reply_to: info@citynet-ap.org", "reply_to: info@"),
            "'info@' is not a valid address",
        ),
    ],
)
def test_a_bad_subscribe_file_stops_serve_with_one_line(
    run_cli, tmp_path: Path, content: str, error: str
) -> None:  # type: ignore[no-untyped-def]
    write(tmp_path / "campaigns" / "subscribe.yaml", content)
    assert run_cli("init").exit_code == 0
    result = run_cli("serve")
    assert result.exit_code != 0 and error in result.output, result.output
    assert "subscribe.yaml" in result.output and "Traceback" not in result.output


def test_an_old_link_cannot_confirm_a_request_that_reuses_its_number(
    client: FlaskClient, settings: Settings, session: Session, db_url: str
) -> None:
    """SQLite gives a deleted row's number to the next row: a link mailed for a request
    that `contacts forget` erased must not confirm the next person's request."""
    post_form(client, email="first@example.org")
    drain(settings, session, "_confirmation")
    (first,) = outbox_messages(settings.outbox, "_confirmation")
    old_link = path_of(confirm_link(first))
    assert client.post(old_link).status_code == 200
    session.commit()
    first_id = session.scalar(select(Subscription.id))
    forget(session, "first@example.org")
    session.commit()
    post_form(client, email="second@example.org")
    session.commit()
    second = session.scalar(select(Subscription))
    assert second is not None and second.email == "second@example.org"
    if db_url.startswith("sqlite"):
        assert second.id == first_id  # the number the old link names, now someone else's
    for method in ("get", "post"):
        response = getattr(client, method)(old_link)
        text = response.get_data(as_text=True)
        assert response.status_code == 400, method
        assert "잘못된 링크" in text and "not valid" in text
        assert "second@example.org" not in text
    session.commit()
    assert session.scalar(select(Subscription.confirmed_at)) is None
    assert session.scalar(select(Contact).where(Contact.email == "second@example.org")) is None
    # The second person's own link works.
    drain(settings, session, "_confirmation")
    (message,) = [
        m
        for m in outbox_messages(settings.outbox, "_confirmation")
        if m["To"].addresses[0].addr_spec == "second@example.org"
    ]
    assert client.post(path_of(confirm_link(message))).status_code == 200
    assert contacts(session) == 1


def test_the_daily_limit_counts_one_mailbox_however_it_is_written(
    client: FlaskClient, session: Session
) -> None:
    """Plus tags, case and the domain's two spellings reach one mailbox: a stranger cannot
    be sent more than three confirmations a day by varying them."""
    for address in (
        "victim@xn--9p4bi0g.kr",
        "victim+1@수원.kr",
        "Victim+news+2@XN--9P4BI0G.KR",
        "victim+3@xn--9p4bi0g.kr",
        "VICTIM@수원.kr",
    ):
        assert post_form(client, email=address).status_code == 200
    assert queued_confirmations(session) == 3
    post_form(client, email="victim.other@xn--9p4bi0g.kr")  # another mailbox
    post_form(client, email="victim@elsewhere.example.org")
    assert queued_confirmations(session) == 5


def _post_from(app, remote: str, address: str) -> int:  # type: ignore[no-untyped-def]
    return int(_post_page(app, remote, address).status_code)


def test_an_ipv6_client_is_its_64(settings: Settings, tmp_path: Path, session: Session) -> None:
    """One IPv6 subscriber line has a /64 of its own: its addresses are one client."""
    subscribe_project(tmp_path, SUBSCRIBE + "limits: {per_client_per_hour: 2}\n")
    app = create_app(settings, tmp_path)
    codes = [
        _post_from(app, "2001:db8:1:2::1", "a@example.org"),
        _post_from(app, "2001:db8:1:2::ffff", "b@example.org"),
        _post_from(app, "2001:db8:1:2:abcd:1:2:3", "c@example.org"),
        _post_from(app, "2001:db8:1:3::1", "d@example.org"),  # another /64
        _post_from(app, "198.51.100.1", "e@example.org"),
        _post_from(app, "198.51.100.2", "f@example.org"),  # IPv4: each address its own
    ]
    assert codes == [200, 200, 429, 200, 200, 200]
    assert queued_confirmations(session) == 5


BUSY = "지금은 구독 신청이 너무 많습니다"


def _post_page(app, remote: str, address: str):  # type: ignore[no-untyped-def]
    client = app.test_client()
    environ = {"REMOTE_ADDR": remote}
    token = form_token_from(client, environ)
    data = {
        "token": token,
        "lang": "ko",
        "email": address,
        "language": "ko",
        "consent": "yes",
        "website": "",
    }
    return client.post("/subscribe", data=data, environ_base=environ)


def form_token_from(client: FlaskClient, environ: dict[str, str]) -> str:
    page = client.get("/subscribe?lang=ko", environ_base=environ).get_data(as_text=True)
    token = re.search(r'name="token" value="([^"]+)"', page)
    assert token is not None
    return token.group(1)


def test_a_ceiling_on_confirmations_per_hour_across_all_clients(
    settings: Settings, tmp_path: Path, session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    """Many clients each under their own limit still cannot make us mail strangers without
    end: past the ceiling nothing is queued, and the visitor is told to come back rather
    than to look in an inbox nothing will reach (issue 21, 4)."""
    subscribe_project(tmp_path, SUBSCRIBE + "limits: {confirmations_per_hour: 2}\n")
    app = create_app(settings, tmp_path)
    suppress(session, "bounced@example.org", "bounced")
    session.commit()
    with caplog.at_level("INFO", logger="outreach"):
        answers = [
            _post_page(app, f"198.51.{n}.1", f"person{n}@city{n}.example.org") for n in range(4)
        ]
        # Past the ceiling a suppressed address is answered as any other: no oracle.
        suppressed = _post_page(app, "198.51.9.1", "bounced@example.org")
    assert [a.status_code for a in answers] == [200, 200, 429, 429]
    assert "받은편지함" in answers[0].get_data(as_text=True)
    busy = answers[2].get_data(as_text=True)
    assert BUSY in busy and "받은편지함" not in busy
    assert suppressed.status_code == 429 and suppressed.get_data() == answers[3].get_data()
    assert queued_confirmations(session) == 2
    refused = [r.getMessage() for r in caplog.records if "confirmations per hour" in r.getMessage()]
    assert len(refused) == 3, refused  # one line for each request refused
    assert all("\n" not in line and "person" not in line for line in refused)


def test_one_network_cannot_use_up_the_hourly_ceiling(
    settings: Settings, tmp_path: Path, session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    """Addresses of one /24 (or IPv6 /48) are each a client of their own, but together may
    take only a fifth of the ceiling: another network's visitor is still mailed."""
    subscribe_project(tmp_path, SUBSCRIBE + "limits: {confirmations_per_hour: 10}\n")
    app = create_app(settings, tmp_path)
    with caplog.at_level("INFO", logger="outreach"):
        ipv4 = [_post_page(app, f"198.51.100.{n}", f"v{n}@d{n}.example.org") for n in range(6)]
        ipv6 = [_post_page(app, f"2001:db8:7:{n}::1", f"w{n}@e{n}.example.org") for n in range(4)]
    assert [a.status_code for a in ipv4] == [200, 200, 429, 429, 429, 429]
    assert [a.status_code for a in ipv6] == [200, 200, 429, 429]
    assert _post_page(app, "203.0.113.9", ADDRESS).status_code == 200
    assert queued_confirmations(session) == 5
    shares = [r.getMessage() for r in caplog.records if "share" in r.getMessage()]
    assert len(shares) == 6 and all("network" in line for line in shares), shares
    assert not any("198.51.100" in line or "2001:db8" in line for line in shares)


def test_one_domain_cannot_use_up_the_hourly_ceiling(
    settings: Settings, tmp_path: Path, session: Session
) -> None:
    """Many networks mailing one domain's addresses take at most half the ceiling: a person
    at another domain is still mailed."""
    subscribe_project(tmp_path, SUBSCRIBE + "limits: {confirmations_per_hour: 10}\n")
    app = create_app(settings, tmp_path)
    codes = [
        _post_page(app, f"10.{n}.0.1", f"victim{n}@googlemail.com").status_code for n in range(8)
    ]
    # googlemail.com is gmail.com: one domain's share.
    codes += [_post_page(app, "10.99.0.1", "other@gmail.com").status_code]
    assert codes == [200] * 5 + [429] * 4
    assert _post_page(app, "10.100.0.1", ADDRESS).status_code == 200
    assert queued_confirmations(session) == 6


def test_the_ceiling_is_read_from_subscribe_yaml(settings: Settings, tmp_path: Path) -> None:
    subscribe_project(tmp_path, SUBSCRIBE + "limits: {confirmations_per_hour: 0}\n")
    from outreach.errors import UserError

    with pytest.raises(UserError, match="confirmations_per_hour"):
        subscriptions.load_config(settings, tmp_path / "campaigns" / "subscribe.yaml")
    subscribe_project(tmp_path)
    config = subscriptions.load_config(settings, tmp_path / "campaigns" / "subscribe.yaml")
    assert config is not None and config.spec.limits.confirmations_per_hour == 100


def test_the_confirmation_goes_to_the_bare_address(
    client: FlaskClient, settings: Settings, session: Session
) -> None:
    """What a visitor types as a name is not shown to the stranger whose address they typed:
    the confirmation names nobody."""
    post_form(client, name="Your bank: account closed, call +82 2 0000 0000")
    post_form(client, email="other@example.org", name="=?utf-8?b?7Iuc7Yuw64S3IOyCrOustOq1rQ==?=")
    drain(settings, session, "_confirmation")
    messages = outbox_messages(settings.outbox, "_confirmation")
    assert len(messages) == 2
    for message in messages:
        (to,) = message["To"].addresses
        assert to.display_name == "" and str(message["To"]) == to.addr_spec


def test_every_answer_takes_at_least_the_floor(
    settings: Settings, tmp_path: Path, session: Session
) -> None:
    """Whether an address is suppressed, pending or new must not show in how long the
    answer takes: the quick answers are padded to a fixed floor."""
    subscribe_project(tmp_path, SUBSCRIBE + "limits: {per_client_per_hour: 5}\n")
    client = create_app(settings, tmp_path).test_client()
    suppress(session, "bounced@example.org", "bounced")
    session.commit()
    token = form_token(client)
    for fields in (
        {"email": "bounced@example.org"},  # suppressed: nothing to do
        {"website": "https://spam.example.com"},  # the honeypot
        {"consent": ""},  # the form again
        {"email": ADDRESS},
        {"organisation": "x" * 20_000},  # too large
        {},
        {},  # the per-client limit: 429
    ):
        started = time.monotonic()
        answer = post_form(client, token=token, **fields)
        assert time.monotonic() - started >= web.SUBSCRIBE_FLOOR, (fields, answer.status_code)
    assert answer.status_code == 429


def test_padding_sleeps_what_is_left_of_the_floor() -> None:
    slept: list[float] = []
    assert web.pad_to(0.1, started=50.0, now=50.03, sleep=slept.append) == pytest.approx(0.07)
    assert web.pad_to(0.1, started=50.0, now=50.25, sleep=slept.append) == 0
    assert web.pad_to(0.1, started=50.0, now=49.0, sleep=slept.append) == 0.1  # clock moved
    assert slept == [pytest.approx(0.07), 0.1]


# Issue 21: the form as an attacker uses it, and as the person whose address they type sees it.


def _confirmations_to(session: Session, *addresses: str) -> int:
    return sum(queued_confirmations(session, a) for a in addresses)


def test_gmail_and_proton_spellings_are_one_mailbox_for_the_daily_limit(
    settings: Settings, project: Path, session: Session
) -> None:
    """Gmail ignores dots and answers at googlemail.com too; Proton ignores dots, hyphens and
    underscores across its domains: strangers varying them reach one inbox (issue 21, 3)."""
    app = create_app(settings, project)
    gmail = [
        "v.ictimname@gmail.com",
        "vi.ctimname@gmail.com",
        "VictimName@googlemail.com",
        "victim.name+x@GoogleMail.com",
        "victimname@gmail.com",
        "v.i.c.t.i.m.n.a.m.e@gmail.com",
    ]
    for n, address in enumerate(gmail):
        assert _post_from(app, f"198.51.{n}.1", address) == 200
    assert _confirmations_to(session, *[a.lower() for a in gmail]) == 3
    proton = ["a.lee@proton.me", "alee@pm.me", "a-lee@protonmail.com", "a_lee+z@protonmail.ch"]
    for n, address in enumerate(proton):
        assert _post_from(app, f"203.0.{n}.1", address) == 200
    assert _confirmations_to(session, *proton) == 3
    # Elsewhere a dot makes another mailbox (Outlook, Naver, a city's own server): each is
    # its own, so nobody's confirmations are withheld for another's.
    for n, address in enumerate(["a.kim@outlook.com", "akim@outlook.com", "a.kim@suwon.go.kr"]):
        assert _post_from(app, f"192.0.{n}.1", address) == 200
    assert _confirmations_to(session, "a.kim@outlook.com", "akim@outlook.com") == 2
    assert queued_confirmations(session, "a.kim@suwon.go.kr") == 1


def test_the_form_token_is_checked_before_the_visitors_allowance_counts(
    settings: Settings, tmp_path: Path, session: Session
) -> None:
    """Any web page can make a visitor's browser POST the form, but without a token: those
    requests must not use up the visitor's allowance (issue 21, 5)."""
    subscribe_project(tmp_path, SUBSCRIBE + "limits: {per_client_per_hour: 3}\n")
    client = create_app(settings, tmp_path).test_client()
    for token in ["", "forged.token", *[""] * 18]:
        assert post_form(client, token=token, email="x@example.org").status_code == 400
    assert queued_confirmations(session) == 0
    assert post_form(client).status_code == 200  # the real visitor, with the form's token
    assert queued_confirmations(session, ADDRESS) == 1


def test_a_permanent_suppression_covers_every_spelling_of_the_mailbox(
    client: FlaskClient, session: Session
) -> None:
    """After a hard bounce of xss2@, Xss2+news@ was sent a confirmation (issue 21, 6)."""
    suppress(session, "xss2@example.org", "bounced")
    suppress(session, "v.ictim@gmail.com", "complained")
    suppress(session, "kept+lists@example.org", "manual")
    session.commit()
    for address in (
        "Xss2+news@example.org",
        "XSS2@example.org",
        "victim+x@googlemail.com",
        "Vic.Tim@gmail.com",
        "kept@example.org",
        "kept+other@example.org",
    ):
        assert post_form(client, email=address).status_code == 200
    assert queued_confirmations(session) == 0
    post_form(client, email="xss3@example.org")  # another mailbox
    assert queued_confirmations(session) == 1


def test_forget_covers_every_spelling_and_erases_tagged_requests(
    client: FlaskClient, settings: Settings, session: Session
) -> None:
    """After `forget victim@`, Victim+z@ was sent a confirmation, and the +tag request rows
    kept the name and organisation a stranger typed (issue 21, 6)."""
    session.add(Contact(email="victim@example.org", name="Victim", attributes={}))
    session.commit()
    post_form(client, email="Victim+z@example.org", name="Typed Name", organisation="Typed Org")
    post_form(client, email="vic.tim+y@gmail.com", name="Gmail Name")
    session.add(Contact(email="victim@gmail.com", attributes={}))
    session.commit()
    assert session.scalar(select(func.count()).select_from(Subscription)) == 2
    forget(session, "victim@example.org")
    forget(session, "victim@gmail.com")
    session.commit()
    assert session.scalars(select(Subscription.email)).all() == []
    from outreach.models import SystemRecipient

    assert session.scalars(select(SystemRecipient.email)).all() == []
    for address in ("Victim+z@example.org", "victim@example.org", "v.ictim+q@googlemail.com"):
        post_form(client, email=address)
    assert queued_confirmations(session) == 0  # those before forget were erased; none since


def _unsubscribe_from(client: FlaskClient, message) -> int:  # type: ignore[no-untyped-def]
    match = re.match(r"<([^>]+)>", str(message["List-Unsubscribe"]))
    assert match is not None
    answer = client.post(path_of(match.group(1)), data={"List-Unsubscribe": "One-Click"})
    return int(answer.status_code)


def test_an_unsubscribe_from_a_confirmation_stops_further_confirmations(
    settings: Settings, project: Path, session: Session
) -> None:
    """The person a stranger subscribed says no in the confirmation itself: no more
    confirmations to that mailbox, whoever asks (issue 21, 7)."""
    app = create_app(settings, project)
    client = app.test_client()
    suppress(session, "left@example.org", "unsubscribed")  # left a campaign: may come back
    session.commit()
    for address in (ADDRESS, "left@example.org"):
        post_form(client, email=address)
    drain(settings, session, "_confirmation")
    mails = {
        m["To"].addresses[0].addr_spec: m for m in outbox_messages(settings.outbox, "_confirmation")
    }
    assert set(mails) == {ADDRESS, "left@example.org"}
    for message in mails.values():
        assert _unsubscribe_from(client, message) == 200
    for n, address in enumerate([ADDRESS, "New.Person+2@gangneung.example.kr", "left@example.org"]):
        assert _post_from(app, f"192.0.2.{n}", address) == 200
    assert _confirmations_to(session, ADDRESS, "left@example.org") == 2  # the first two only
    assert queued_confirmations(session, "new.person+2@gangneung.example.kr") == 0
    # Their own link still works: confirming is the owner's yes, and lifts their no.
    assert client.post(path_of(confirm_link(mails[ADDRESS]))).status_code == 200
    session.commit()
    assert session.scalar(select(Suppression).where(Suppression.email == ADDRESS)) is None


def test_the_confirm_page_shows_what_will_be_saved(
    client: FlaskClient, settings: Settings, session: Session
) -> None:
    """A stranger's name and organisation become the contact's: the owner sees them before
    pressing the button (issue 21, 8)."""
    post_form(client, name="<b>Mallory</b> 말로리", organisation="Evil Corp & Co")
    drain(settings, session, "_confirmation")
    (message,) = outbox_messages(settings.outbox, "_confirmation")
    page = client.get(path_of(confirm_link(message))).get_data(as_text=True)
    assert "&lt;b&gt;Mallory&lt;/b&gt; 말로리" in page and "<b>Mallory" not in page
    assert "Evil Corp &amp; Co" in page
    assert "이름" in page and "기관" in page  # labelled, in the reader's language
    english = client.get(path_of(confirm_link(message)) + "?lang=en").get_data(as_text=True)
    assert "Name" in english and "Organisation" in english
    post_form(client, email="plain@example.org", name="", organisation="")
    drain(settings, session, "_confirmation")
    plain = next(
        m
        for m in outbox_messages(settings.outbox, "_confirmation")
        if m["To"].addresses[0].addr_spec == "plain@example.org"
    )
    shown = client.get(path_of(confirm_link(plain)) + "?lang=en").get_data(as_text=True)
    assert "Organisation" not in shown  # nothing typed, nothing shown


def test_a_replayed_confirm_link_after_an_unsubscribe_does_not_say_confirmed(
    client: FlaskClient, settings: Settings, session: Session
) -> None:
    post_form(client)
    drain(settings, session, "_confirmation")
    (message,) = outbox_messages(settings.outbox, "_confirmation")
    link = path_of(confirm_link(message))
    assert "구독이 확인되었습니다" in client.post(link).get_data(as_text=True)
    suppress(session, ADDRESS, "unsubscribed", detail="one-click")
    session.commit()
    for answer in (client.post(link), client.get(link)):
        page = answer.get_data(as_text=True)
        assert "구독이 확인되었습니다" not in page and "이미 확인" not in page, page
        assert "수신거부" in page  # it says they unsubscribed since
    session.commit()
    assert session.scalar(select(Suppression.reason).where(Suppression.email == ADDRESS)) == (
        "unsubscribed"
    )
