"""Data: pretraining instances, fine-tuning task datasets, batching."""
