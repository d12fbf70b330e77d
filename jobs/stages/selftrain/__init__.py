"""Phase selftrain: self-training data: sample, score, train_data."""
