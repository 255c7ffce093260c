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
