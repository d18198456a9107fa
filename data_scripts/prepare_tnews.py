"""Convert CLUE TNEWS (Toutiao news headline topic, 15 classes, Chinese) into train/dev/test.jsonl.

    python data_scripts/prepare_tnews.py --src $BERT_NP_DATA --out DIR

Official download (CLUE):
    https://storage.googleapis.com/cluebenchmark/tasks/tnews_public.zip
Unzip it into DIR/tnews/ (train.json, dev.json, test.json, labels.json), then pass --src DIR.
Splits: our test is CLUE's labelled dev.json (10,000 rows; CLUE's test.json is unlabelled and
unused). Our train / dev are 90% / 10% (seed 0) of CLUE's train.json, or, where only the partial
train_processed.json exists (the shared data), of that file; train rows whose sentence is in
dev.json or repeats an earlier one are dropped and counted. With the shared data: train 10,231 /
dev 1,137 / test 10,000 rows. Labels 100..116 map to 0..14 in the order of labels.json.
Nothing is downloaded by this script; the URL above is for users with a network.
"""
import sys

from bert_np.data.prepare import main

if __name__ == "__main__":
    sys.exit(main(task="tnews", description=__doc__))
