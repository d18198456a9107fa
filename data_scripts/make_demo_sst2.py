"""Regenerate the SST-2 demo sample shipped in bert_np/demo_data/sst2 (see SOURCE.md there).

    python data_scripts/make_demo_sst2.py --src $BERT_NP_DATA

train.jsonl: 3,000 rows of GLUE SST-2 train drawn at random without replacement (seed 0, natural
label distribution, original order kept); dev.jsonl: the full 872-row SST-2 dev set. The output
is deterministic: rerunning reproduces the shipped files byte for byte.

Official download (GLUE): https://dl.fbaipublicfiles.com/glue/data/SST-2.zip; unzip it so that
DIR/glue/SST-2/{train,dev}.tsv exist and pass --src DIR. Nothing is downloaded by this script.
"""
import argparse
import os
import sys
from pathlib import Path

from bert_np.data.prepare import DEMO_TRAIN_SIZE, SPLIT_SEED, make_sst2_demo

DEMO_DIR = Path(__file__).resolve().parents[1] / "bert_np" / "demo_data" / "sst2"


def main(argv=None) -> int:
    """Write the demo train.jsonl and dev.jsonl and print their row counts."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", default=os.environ.get("BERT_NP_DATA"),
                        help="data directory holding glue/SST-2 (default: $BERT_NP_DATA)")
    parser.add_argument("--out", default=str(DEMO_DIR), help=f"default: {DEMO_DIR}")
    parser.add_argument("--n-train", type=int, default=DEMO_TRAIN_SIZE)
    parser.add_argument("--seed", type=int, default=SPLIT_SEED)
    args = parser.parse_args(argv)
    if not args.src:
        parser.error("no data directory: pass --src or set $BERT_NP_DATA")
    demo = make_sst2_demo(Path(args.src), Path(args.out), args.n_train, args.seed)
    print(f"SST-2 demo -> {args.out}\n{demo.summary()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
