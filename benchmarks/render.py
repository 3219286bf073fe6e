"""Personalised messages per second: our two-stage pipeline against the naive one.

Naive: Jinja renders the whole MJML template for each recipient, then MJML compiles it.
Ours: Jinja + MJML once per language (stage 1), then one small Jinja render per recipient
(stage 2) and the HTML-to-text part done once. Both produce the subject, HTML and text of
each message; the naive one also derives its text per recipient, as it must.

    python benchmarks/render.py [--n 2000]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from mjml import mjml2html

from outreach.campaigns import load_campaign
from outreach.compiler import compile_campaign
from outreach.config import Settings
from outreach.render import Deferred, html_to_text, personalise, stage1_environment
from outreach.tokens import Links, Tokens

ROOT = Path(__file__).resolve().parent.parent


def contacts(n: int) -> list[dict]:
    return [
        {
            "email": f"officer{i}@city{i}.example.org",
            "name": f"담당자 {i}",
            "organisation": f"City {i}",
            "language": "ko",
            "tags": [],
            "attributes": {},
        }
        for i in range(n)
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    settings = Settings(postal_address="CityNet Secretariat, Seoul", secret_key="bench")
    links = Links("https://mail.citynet-ap.org", Tokens("bench"))
    with tempfile.TemporaryDirectory() as tmp:
        for folder in ("campaigns", "templates"):
            shutil.copytree(ROOT / folder, Path(tmp) / folder)
        path = Path(tmp) / "campaigns" / "2026-12-newsletter.yaml"
        # A realistic newsletter of 10+ sections: repeat the articles.
        text = path.read_text(encoding="utf-8")
        campaign = load_campaign(path)
        articles = campaign.spec.context["articles"] * 3
        campaign.spec.context["articles"] = articles
        sections = len(articles) + 4
        people = contacts(args.n)

        start = time.perf_counter()
        compiled = compile_campaign(campaign, {"ko"}, settings)
        compile_time = time.perf_counter() - start
        personaliser = compiled.personaliser()
        variant = compiled.variants["ko"]
        start = time.perf_counter()
        for i, contact in enumerate(people):
            personalise(personaliser, variant, {"contact": contact, **links.variables(i)})
        ours = time.perf_counter() - start

        # The naive pipeline: no lifting, everything per recipient.
        env = stage1_environment(campaign.templates_dir, Deferred())
        env.extensions.clear()
        template = env.get_template("newsletter.ko.mjml")
        subject_t = env.from_string(campaign.subject_for("ko"))
        naive_n = max(50, args.n // 10)
        timings = {}
        for with_text in (False, True):
            start = time.perf_counter()
            for i, contact in enumerate(people[:naive_n]):
                urls = links.variables(i)
                variables = {
                    **campaign.spec.context,
                    "campaign": {"name": campaign.name, "subject": "x"},
                    "language": "ko",
                    "advertising": False,
                    "sender": "CityNet",
                    "postal_address": settings.postal_address,
                    "contact": contact,
                    **urls,
                }
                subject_t.render(variables)
                html = mjml2html(template.render(variables))
                if with_text:
                    html_to_text(html)
            timings[with_text] = (time.perf_counter() - start) / naive_n * args.n
        naive, naive_html = timings[True], timings[False]
        del text
    print(
        f"template: newsletter.ko.mjml with {sections} sections, {len(variant.html):,} bytes of HTML"
    )
    print(f"compile once (Jinja + MJML + text): {compile_time * 1000:.1f} ms")
    print(
        f"two-stage pipeline: {args.n / ours:8.0f} messages/s ({ours / args.n * 1e6:.0f} µs each)"
    )
    print(
        f"naive pipeline:     {args.n / naive:8.0f} messages/s ({naive / args.n * 1e6:.0f} µs each)"
    )
    print(
        f"naive without text: {args.n / naive_html:8.0f} messages/s ({naive_html / args.n * 1e6:.0f} µs each)"
    )
    print(
        f"ratio two-stage/naive: {naive / ours:.1f}x; against naive without text: "
        f"{naive_html / ours:.1f}x  (target >= 8x)"
    )


if __name__ == "__main__":
    main()
