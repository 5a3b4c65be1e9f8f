"""Stage 3: embeddings in, numbers a reviewer accepts out (episodes, statistics, paired comparison, result
records, the leaderboard)."""
