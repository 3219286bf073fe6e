# One image for every role: migrate (outreach init), worker, web, and one-off commands.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY outreach ./outreach
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin outreach
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
WORKDIR /srv/outreach
# Campaigns and templates are reviewed files; compose mounts the checkout's over these.
COPY --chown=outreach:outreach campaigns ./campaigns
COPY --chown=outreach:outreach templates ./templates
USER outreach
EXPOSE 8000
ENTRYPOINT ["outreach"]
CMD ["--help"]
