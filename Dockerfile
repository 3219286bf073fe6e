# One image for every role: migrate (outreach init), worker, web (gunicorn), bounces, and
# one-off commands. .ci/image-check builds it and runs each role as docker-compose.yml does.
FROM python:3.11-slim AS build
RUN python -m venv /opt/outreach
ENV PATH=/opt/outreach/bin:$PATH
WORKDIR /src
# The dependencies first, in a layer of their own: a change to the code rebuilds only the
# small layers after it. Exactly the versions of requirements.lock, each checked against its
# hash, so that two builds of one commit install the same (DEVELOPERS.md: the lock file).
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY outreach ./outreach
RUN pip install --no-cache-dir --no-deps . && pip check

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/outreach/bin:$PATH
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin outreach
# Only the installed virtualenv: no wheel, no compiler cache, no source in the image.
COPY --from=build /opt/outreach /opt/outreach
WORKDIR /srv/outreach
# Campaigns and templates are reviewed files; compose mounts the checkout's over these.
# .dockerignore keeps contact files (*.csv, *.xlsx) out of the build context, so none can
# come in with them.
COPY --chown=outreach:outreach campaigns ./campaigns
COPY --chown=outreach:outreach templates ./templates
USER outreach
EXPOSE 8000
ENTRYPOINT ["outreach"]
CMD ["--help"]
