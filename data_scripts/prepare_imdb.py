"""Convert IMDB (Large Movie Review Dataset v1.0, Maas et al. 2011) into train/dev/test.jsonl.

    python data_scripts/prepare_imdb.py --src $BERT_NP_DATA --out DIR

Official download:
    https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz
Put the tarball, unextracted, at DIR/imdb/aclImdb_v1.tar.gz (the shared data holds a repacked
labelled-only copy, DIR/imdb/aclImdb_v1_labeled.tar.gz; either is read), then pass --src DIR.
The archive is read as a stream; nothing is extracted to disk.
Output: train 22,500 / dev 2,500 / test 25,000 rows. dev is 2,500 reviews of the official
train set picked at random (seed 0) and removed from train.
Nothing is downloaded by this script; the URL above is for users with a network.
"""
import sys

from bert_np.data.prepare import main

if __name__ == "__main__":
    sys.exit(main(task="imdb", description=__doc__))
