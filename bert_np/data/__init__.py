"""Data for bert_np: pretraining instances (next-sentence pairs, 80/10/10 masking) and batching."""
