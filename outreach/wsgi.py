"""The WSGI application for gunicorn: `gunicorn outreach.wsgi:app` (what docker-compose runs)."""

from outreach.config import Settings
from outreach.web import create_app

app = create_app(Settings.load())
