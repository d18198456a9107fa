"""Convert GLUE STS-B (sentence similarity, a score in [0, 5]) into train/dev/test.jsonl.

    python data_scripts/prepare_stsb.py --src $BERT_NP_DATA --out DIR

Official download (GLUE):
    https://dl.fbaipublicfiles.com/glue/data/STS-B.zip
Unzip it so that DIR/glue/STS-B/{train,dev,test}.tsv exist, then pass --src DIR.
Output: train 5,749 / dev 1,500 / test 1,379 (unlabelled) rows; labels are floats.
Nothing is downloaded by this script; the URL above is for users with a network.
"""
import sys

from bert_np.data.prepare import main

if __name__ == "__main__":
    sys.exit(main(task="stsb", description=__doc__))
