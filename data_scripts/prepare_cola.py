"""Convert GLUE CoLA (Corpus of Linguistic Acceptability) into train/dev/test.jsonl.

    python data_scripts/prepare_cola.py --src $BERT_NP_DATA --out DIR

Official download (GLUE):
    https://dl.fbaipublicfiles.com/glue/data/CoLA.zip
Unzip it so that DIR/glue/CoLA/{train,dev,test}.tsv exist, then pass --src DIR.
Output: train 8,551 / dev 1,043 / test 1,063 (unlabelled) rows.
Nothing is downloaded by this script; the URL above is for users with a network.
"""
import sys

from bert_np.data.prepare import main

if __name__ == "__main__":
    sys.exit(main(task="cola", description=__doc__))
