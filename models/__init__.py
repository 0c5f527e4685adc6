"""Models over the user-interest graph: LightGCN retrieval, text cold start, ranker, baselines."""
