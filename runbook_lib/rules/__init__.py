"""Rules: evidence (DataFrame or SourceError) + thresholds -> findings. One module per source."""
