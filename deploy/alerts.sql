-- What needs a person: one line per problem, nothing when all is well, so that cron mails
-- only then (docs/operations.md, "Alerts"):
--
--   */10 * * * *  cd /srv/outreach && docker compose exec -T postgres \
--                   psql -U outreach -d outreach -Atq -v ON_ERROR_STOP=1 < deploy/alerts.sql
--
-- Read-only; PostgreSQL. The thresholds are below, each with its reason.

-- A campaign paused by itself (relay failures, too many policy rejections) waits for a
-- person: docs/operations.md, "Runbook: a campaign paused by relay failures".
SELECT format('paused: %s (%s)', name, coalesce(state_reason, 'no reason recorded'))
FROM campaigns
WHERE state = 'paused'
ORDER BY name;

-- Work that is due but nobody does: no worker is running, or none reaches the database.
SELECT format('stalled: %s has %s deliveries due for over 15 minutes; are the workers running?',
              c.name, count(*))
FROM deliveries d
JOIN campaigns c ON c.id = d.campaign_id
WHERE c.state = 'sending'
  AND d.state IN ('queued', 'deferred')
  AND d.next_attempt_at < now() - interval '15 minutes'
GROUP BY c.name
ORDER BY c.name;

SELECT format('late: %s was to start at %s; are the workers running?', name, send_at)
FROM campaigns
WHERE state = 'scheduled' AND send_at < now() - interval '15 minutes'
ORDER BY name;

-- A relay or a receiving domain in trouble shows first as deferred deliveries, then as
-- failed ones: more than 5% deferred, or 2% failed, of a campaign of the last week.
SELECT format('failing: %s has %s deferred and %s failed of %s deliveries',
              c.name,
              count(*) FILTER (WHERE d.state = 'deferred'),
              count(*) FILTER (WHERE d.state = 'failed'),
              count(*))
FROM deliveries d
JOIN campaigns c ON c.id = d.campaign_id
WHERE c.state IN ('sending', 'paused', 'done')
  AND c.updated_at > now() - interval '7 days'
GROUP BY c.name
HAVING count(*) FILTER (WHERE d.state = 'deferred') > 0.05 * count(*)
    OR count(*) FILTER (WHERE d.state = 'failed') > 0.02 * count(*)
ORDER BY c.name;

-- Mailbox providers start to refuse a sender at a few percent of hard bounces: the list
-- needs cleaning before the next campaign.
SELECT format('bouncing: %s has %s bounced of %s sent',
              c.name,
              count(*) FILTER (WHERE d.state = 'bounced'),
              count(*) FILTER (WHERE d.state IN ('sent', 'bounced')))
FROM deliveries d
JOIN campaigns c ON c.id = d.campaign_id
WHERE c.updated_at > now() - interval '7 days'
GROUP BY c.name
HAVING count(*) FILTER (WHERE d.state = 'bounced')
     > 0.03 * greatest(count(*) FILTER (WHERE d.state IN ('sent', 'bounced')), 1)
ORDER BY c.name;
