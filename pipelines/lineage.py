"""SQL over the lineage tables (the same queries docs/data.md shows)."""

# Every ancestor of one artifact, down to the raw files, with its shortest distance.
ANCESTORS_SQL = """
WITH RECURSIVE ancestors(artifact_id, depth) AS (
    SELECT ?::VARCHAR, 0
    UNION
    SELECT e.input_artifact_id, a.depth + 1
    FROM lineage_edges e JOIN ancestors a ON e.artifact_id = a.artifact_id
)
SELECT min(a.depth) AS depth, x.asset_key, x.partition, x.kind, x.location, x.content_hash
FROM ancestors a JOIN artifacts x USING (artifact_id)
GROUP BY ALL
ORDER BY depth, x.asset_key, x.location
"""

# The newest artifact of an (asset, partition).
LATEST_SQL = "SELECT artifact_id FROM artifacts WHERE asset_key = ? AND partition = ? ORDER BY seq DESC LIMIT 1"

# The days of taobao logs behind an artifact: its ancestors among the daily log partitions.
TRAINED_ON_DAYS_SQL = """
WITH RECURSIVE ancestors(artifact_id) AS (
    SELECT ?::VARCHAR
    UNION
    SELECT e.input_artifact_id FROM lineage_edges e JOIN ancestors a ON e.artifact_id = a.artifact_id
)
SELECT DISTINCT x.partition
FROM ancestors a JOIN artifacts x USING (artifact_id)
WHERE x.asset_key = 'taobao_daily_logs'
ORDER BY x.partition
"""

# The input of one asset (2nd parameter) that an artifact (1st) was computed from, e.g. a model's meta_tasks.
TRAINED_WITH_SQL = """
SELECT x.artifact_id, x.content_hash
FROM lineage_edges e JOIN artifacts x ON x.artifact_id = e.input_artifact_id
WHERE e.artifact_id = ? AND x.asset_key = ?
"""
