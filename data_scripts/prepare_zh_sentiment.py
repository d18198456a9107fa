"""Convert Chinese e-commerce review sentiment (online_shopping_10_cats) into train/dev/test.jsonl.

    python data_scripts/prepare_zh_sentiment.py --src $BERT_NP_DATA --out DIR

Official download (SophonPlus/ChineseNlpCorpus):
    https://github.com/SophonPlus/ChineseNlpCorpus/raw/master/datasets/online_shopping_10_cats/online_shopping_10_cats.zip
Put the zip, unextracted, at DIR/zh_sentiment/online_shopping_10_cats.zip, then pass --src DIR.
Empty and repeated reviews are dropped and counted; the rest is split 80/10/10 into
train / dev / test at random (seed 0): train 50,179 / dev 6,272 / test 6,272 rows.
Nothing is downloaded by this script; the URL above is for users with a network.
"""
import sys

from bert_np.data.prepare import main

if __name__ == "__main__":
    sys.exit(main(task="zh_sentiment", description=__doc__))
