"""Convert GLUE SST-2 (Stanford Sentiment Treebank, binary sentiment) into train/dev/test.jsonl.

    python data_scripts/prepare_sst2.py --src $BERT_NP_DATA --out DIR

Official download (GLUE):
    https://dl.fbaipublicfiles.com/glue/data/SST-2.zip
Unzip it so that DIR/glue/SST-2/{train,dev,test}.tsv exist, then pass --src DIR.
Output: train 67,349 / dev 872 / test 1,821 (unlabelled) rows.
Nothing is downloaded by this script; the URL above is for users with a network.
"""
import sys

from bert_np.data.prepare import main

if __name__ == "__main__":
    sys.exit(main(task="sst2", description=__doc__))
