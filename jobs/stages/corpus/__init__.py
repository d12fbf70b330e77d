"""Phase corpus: documents in: bootstrap, ingest, doc_dedup, annotate."""
