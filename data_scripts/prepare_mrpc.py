"""Convert GLUE MRPC (Microsoft Research Paraphrase Corpus) into train/dev/test.jsonl.

    python data_scripts/prepare_mrpc.py --src $BERT_NP_DATA --out DIR

Official download: the MSR files as used by GLUE's download script
(https://gist.github.com/W4ngatang/60c2bdb54d156a41194446737ce03e2e):
    https://dl.fbaipublicfiles.com/senteval/senteval_data/msr_paraphrase_train.txt
    https://dl.fbaipublicfiles.com/senteval/senteval_data/msr_paraphrase_test.txt
    https://dl.fbaipublicfiles.com/glue/data/mrpc_dev_ids.tsv
Run the GLUE script to build train.tsv / dev.tsv; put them and msr_paraphrase_test.txt in
DIR/glue/MRPC/, then pass --src DIR.
Output: train 3,668 / dev 408 / test 1,725 rows; the test split is labelled (from
msr_paraphrase_test.txt, same pairs and order as GLUE's test.tsv).
Nothing is downloaded by this script; the URL above is for users with a network.
"""
import sys

from bert_np.data.prepare import main

if __name__ == "__main__":
    sys.exit(main(task="mrpc", description=__doc__))
