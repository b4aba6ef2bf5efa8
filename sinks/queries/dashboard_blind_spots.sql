-- Dashboard: the drills most often among learners' three weakest (each learner's latest
-- blind-spots snapshot), with the learners' average score on them.
-- params: drills UInt32 = 10
SELECT
    if(JSONType(spot, 'drill_id') = 'String',
       JSONExtractString(spot, 'drill_id'),
       JSONExtractRaw(spot, 'drill_id')) AS drill_id,
    any(JSONExtractString(spot, 'drill_name')) AS drill_name,
    count() AS learners,
    round(avg(JSONExtractFloat(spot, 'avg_score')), 1) AS avg_score
FROM blind_spots_current
ARRAY JOIN JSONExtractArrayRaw(blind_spots) AS spot
GROUP BY drill_id
ORDER BY learners DESC, avg_score, drill_id
LIMIT {drills:UInt32}
