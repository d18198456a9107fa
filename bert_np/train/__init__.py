"""Training: the one training loop and the runs built around it.

    loop.py         the loop: batches -> gradients -> clip -> AdamW, the non-finite guard, the
                    JSONL log, the progress bar, evaluation and checkpoint hooks, resume state
    progress.py     progress: tqdm's bar on a terminal or in Jupyter, a line a minute in a log file
    checkpoints.py  training checkpoints that resume bit for bit; the JSONL log
    settings.py     settings fields carrying their default and help (the CLI's options)
    parallel.py     data-parallel training on MPI and gradient accumulation: shards, micro-batches,
                    one Allreduce per step; rank 0 alone writes
    pretrain.py     MLM + NSP pretraining from raw text (`bert-np pretrain`)
    finetune.py     sequence classification (`bert-np finetune`, `evaluate`, `predict`)
    quantize.py     `bert-np quantize`: a saved model's int8 copy (bert_np/quantize.py)
    metrics.py      accuracy, F1, MCC, Pearson, Spearman
    plots.py        training curves from the log
    demo.py         `bert-np demo`: fine-tune MiniLM on the shipped SST-2 sample
"""
