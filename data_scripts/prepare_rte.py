"""Convert GLUE RTE (Recognizing Textual Entailment) into train/dev/test.jsonl.

    python data_scripts/prepare_rte.py --src $BERT_NP_DATA --out DIR

Official download (GLUE):
    https://dl.fbaipublicfiles.com/glue/data/RTE.zip
Unzip it so that DIR/glue/RTE/{train,dev,test}.tsv exist, then pass --src DIR.
Output: train 2,490 / dev 277 / test 3,000 (unlabelled) rows; entailment = 0,
not_entailment = 1.
Nothing is downloaded by this script; the URL above is for users with a network.
"""
import sys

from bert_np.data.prepare import main

if __name__ == "__main__":
    sys.exit(main(task="rte", description=__doc__))
