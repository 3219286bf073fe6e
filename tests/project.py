"""A small project folder (templates, segments, campaigns) for rendering and sending tests."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import write

LAYOUT = """<mjml lang="{{ language }}">
  <mj-body>
    {% block content %}{% endblock %}
    <mj-section><mj-column><mj-text>
      {{ postal_address }} <a href="{{ unsubscribe_url }}">{% if language == "ko" %}수신거부{% else %}Unsubscribe{% endif %}</a>
    </mj-text></mj-column></mj-section>
  </mj-body>
</mjml>
"""

NEWS_EN = """{% extends "layouts/base.mjml" %}
{% block content %}
<mj-section><mj-column>
  <mj-text>Dear {{ contact.name | default("colleague", true) }} of {{ contact.organisation }},</mj-text>
  {% for article in articles %}
  <mj-text><a href="{{ article.url }}">{{ article.title.en }}</a></mj-text>
  {% endfor %}
  <mj-button href="https://citynet-ap.org/">Visit</mj-button>
</mj-column></mj-section>
{% endblock %}
"""

NEWS_KO = """{% extends "layouts/base.mjml" %}
{% block content %}
<mj-section><mj-column>
  <mj-text>{{ contact.name | default("담당자", true) }}님, 안녕하십니까.</mj-text>
  {% for article in articles %}
  <mj-text><a href="{{ article.url }}">{{ article.title.ko }}</a></mj-text>
  {% endfor %}
</mj-column></mj-section>
{% endblock %}
"""

SEGMENTS = """everyone:
  where:
    not: {email: nobody@example.org}
koreans:
  where: {country: KR}
nobody:
  where: {email: nobody@example.org}
"""

CAMPAIGN = """name: news
template: news
subject:
  en: "News for {{ contact.name | default('you', true) }}"
  ko: "시티넷 소식 — {{ contact.name | default('담당자', true) }}님"
from: "시티넷 사무국 <news@citynet-ap.org>"
reply_to: info@citynet-ap.org
audience:
  include: [everyone]
default_language: en
context:
  articles:
    - title: {en: "Colombo drains", ko: "콜롬보 배수로"}
      url: https://citynet-ap.org/news/colombo
    - title: {en: "Suwon lab", ko: "수원 리빙랩"}
      url: https://citynet-ap.org/news/suwon
"""

CONTACTS = """email,name,organisation,country,language,membership
kim@suwon.example.org,김수진,수원특례시,KR,ko,full
maria@makati.example.com,Maria Santos,Makati,PH,en,full
sato@yokohama.example.com,Sato Haruka,Yokohama,JP,ja,full
"""


def make_project(root: Path, campaign: str = CAMPAIGN, **templates: str) -> Path:
    write(root / "templates" / "layouts" / "base.mjml", LAYOUT)
    write(root / "templates" / "news.en.mjml", NEWS_EN)
    write(root / "templates" / "news.ko.mjml", NEWS_KO)
    for name, text in templates.items():
        write(root / "templates" / name.replace("__", "/"), text)
    write(root / "campaigns" / "segments.yaml", SEGMENTS)
    write(root / "contacts.csv", CONTACTS)
    return write(root / "campaigns" / "news.yaml", campaign)
