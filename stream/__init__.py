"""The one dataflow that computes every behaviour feature, for backfill and live runs alike."""
