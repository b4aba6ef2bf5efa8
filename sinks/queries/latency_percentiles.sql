-- Seed 004: page-load and API response times per UTC day: p50/p95/p99 in ms and the
-- estimated number of events, each kept sample weighted by 1 / sample_rate (page loads
-- are sampled). Weights are scaled by 1000 to integers; quantiles do not change.
-- params: days UInt32 = 7; as_of Date = today
SELECT
    toDate(timestamp) AS day,
    event_type AS metric,
    count() AS samples,
    round(sum(1 / sample_rate)) AS estimated_events,
    quantileExactWeighted(0.5)(ms, weight) AS p50_ms,
    quantileExactWeighted(0.95)(ms, weight) AS p95_ms,
    quantileExactWeighted(0.99)(ms, weight) AS p99_ms
FROM
(
    SELECT
        timestamp,
        event_type,
        sample_rate,
        toUInt64(round(1000 / sample_rate)) AS weight,
        if(event_type = 'page_load_time',
           JSONExtractFloat(properties, 'load_time_ms'),
           JSONExtractFloat(properties, 'response_time_ms')) AS ms
    FROM events
    WHERE event_type IN ('page_load_time', 'api_response_time')
      AND timestamp >= toDateTime({as_of:Date}, 'UTC') - toIntervalDay({days:UInt32})
      AND timestamp < toDateTime({as_of:Date}, 'UTC') + toIntervalDay(1)
)
GROUP BY day, metric
ORDER BY day, metric
