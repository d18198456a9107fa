"""Data: pretraining instances (next-sentence pairs, 80/10/10 masking), fine-tuning task datasets,
batching."""
