"""The pretraining corpus and distillation transfer sets of data_scripts/ (bert_np.data.corpora):
dev-sentence leakage checks on small synthetic inputs, the file formats the project reads, and, on
the shared data, that the real outputs hold no SST-2 (or MRPC) dev sentence."""
import importlib.util
import json
import re
from pathlib import Path

import pytest

from bert_np.data import corpora as C
from bert_np.data.pretraining import PretrainingDataset, read_documents
from bert_np.data.tasks import load_jsonl
from bert_np.tokenization import BertTokenizer

SCRIPTS = Path(__file__).resolve().parents[1] / "data_scripts"


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


corpus_script = load_script("make_pretraining_corpus")
transfer_script = load_script("make_transfer_set")

# ---------------------------------------------------------------------------- synthetic data

SST2_DEV = ["it 's a charming and often affecting journey . ",
            "unflinchingly bleak and desperate ",
            "the subtle strength of `` elling '' is that it never loses touch with the reality "
            "of the grim situation . ",
            "very bad . "]
SST2_TRAIN = ["hide new secretions from the parental units ", "contains no wit , only labored gags ",
              "Very  Bad . ", "a gorgeous , witty , seductive movie . "]
MRPC_DEV = [("He said the foodservice pie business does n't fit the company 's long-term growth "
             "strategy .", "\" The foodservice pie business does not fit our long-term growth "
             "strategy .")]
MRPC_TRAIN = [("Amrozi accused his brother , whom he called \" the witness \" , of deliberately "
               "distorting his evidence .", "Referring to him as only \" the witness \" , Amrozi "
               "accused his brother of deliberately distorting his evidence ."),
              ("The foodservice pie business does not fit our long-term growth strategy .",
               "Something else entirely was said by the company on Monday .")]
WIKITEXT = """ = Robert Boulter = 

 Robert Boulter is an English film , television and theatre actor . He had a guest @-@ starring role on the television series The Bill in 2000 . 

 = = Career = = 

 In 2006 Boulter starred in the play Citizenship . It was a charming and often affecting journey , one critic wrote . 

 = Second Article = 

 The second article talks about <unk> things . Unflinchingly bleak and desperate . It has two sentences . 
"""
CLEAN_REVIEWS = [f"Review number {i} is about a film.<br /><br />The plot was fine. I liked "
                 f"the actors in it. Number {i} ends here!" for i in range(12)]
# a review holding a dev sentence inside a longer sentence: removed whole (substring rule)
LEAKING_REVIEW = ("I went in with hopes. Honestly, the subtle strength of \"Elling\" is that it "
                  "never loses touch with the reality of the grim situation, as others said. "
                  "Go see it.")
# a review holding a dev sentence as a sentence, written differently: removed whole too
PLANTED_REVIEW = ("Some context first. It's a  CHARMING and often affecting journey! "
                  "More words follow here. The end.")
# a review holding a short dev sentence (4 words: exact match only): that sentence removed
SHORT_REVIEW = "Some context first. UNFLINCHINGLY bleak, and desperate! More words follow here."


def write_tsv(path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(["\t".join(header)] + ["\t".join(r) for r in rows]) + "\n",
                    encoding="utf-8")


@pytest.fixture
def fake_src(tmp_path):
    """A data directory with the GLUE and WikiText files the scripts read (IMDB is passed as
    texts)."""
    src = tmp_path / "data"
    write_tsv(src / "glue/SST-2/dev.tsv", ["sentence", "label"], [(s, "1") for s in SST2_DEV])
    write_tsv(src / "glue/SST-2/train.tsv", ["sentence", "label"], [(s, "0") for s in SST2_TRAIN])
    header = ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]
    write_tsv(src / "glue/MRPC/dev.tsv", header, [("1", "1", "2", a, b) for a, b in MRPC_DEV])
    write_tsv(src / "glue/MRPC/train.tsv", header, [("1", "3", "4", a, b) for a, b in MRPC_TRAIN])
    (src / "wiki").mkdir()
    (src / "wiki/wiki.txt").write_text(WIKITEXT, encoding="utf-8")
    (src / "imdb").mkdir()
    (src / "imdb/aclImdb_v1_labeled.tar.gz").write_bytes(b"")  # named in the manifest only
    return src


@pytest.fixture
def small_tokenizer(tmp_path):
    words = sorted({w for text in CLEAN_REVIEWS + [WIKITEXT, SHORT_REVIEW]
                    for w in re.findall(r"[a-z0-9]+|[^\sa-z0-9]", text.lower())})
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words) + "\n")
    return BertTokenizer.from_vocab(vocab)


# ---------------------------------------------------------------------------- normalisation

def test_normalize_undoes_sst2_tokenisation():
    assert C.normalize("It's a charming and often affecting journey.") == \
        C.normalize("it 's a charming and often affecting journey . ")
    assert C.normalize("He doesn't fit the \"Elling\" self-conscious world") == \
        C.normalize("he does n't fit the `` elling '' self - conscious world")
    assert C.normalize("  Café   NOIR!! ") == "cafe noir"
    assert C.normalize("it 's") != C.normalize("it is")


def test_review_sentences_strip_html_and_split_at_sentence_ends():
    text = "A <i>fine</i> film.<br /><br />no capital after this. It works &amp; fails... Yes!"
    assert C.review_sentences(text) == ["A fine film.", "no capital after this.",
                                        "It works & fails...", "Yes!"]


# ---------------------------------------------------------------------------- the dev filter

def test_planted_dev_sentence_is_removed_and_counted_also_with_other_case_and_spacing():
    dev = C.DevFilter.from_sentences([("sst2", s) for s in SST2_DEV])
    corpus = ["A harmless sentence.", "it 's a charming and often affecting journey . ",
              "IT'S A   Charming and often affecting JOURNEY", "Very bad.", "very   BAD"]
    kept = [s for s in corpus if dev.keep_sentence(s)]
    assert kept == ["A harmless sentence."]
    assert dev.removed[("sentence", "exact", "sst2")] == 4
    assert dev.report()["removed"] == {"sentence/exact/sst2": 4}


def test_document_containing_a_long_dev_sentence_is_removed_but_short_ones_only_match_exactly():
    dev = C.DevFilter.from_sentences([("sst2", s) for s in SST2_DEV])
    leaking = C.review_sentences(LEAKING_REVIEW)
    assert dev.document_leaks(leaking, kind="review")
    # across a sentence boundary too
    assert dev.document_leaks(["Unflinchingly bleak.", "And desperate souls, all of them."]) \
        is False  # 3 words: below the substring threshold
    assert dev.document_leaks(["Wow: it's a charming and often", "affecting journey, really."])
    # a short dev sentence inside a longer one is no leak ("very bad ." is 2 words)
    assert dev.keep_sentence("The acting was very bad, the music worse.")
    # a word-boundary match only: "journeys" is not "journey"
    assert not dev.contained("it's a charming and often affecting journeys")
    assert dev.removed[("review", "substring", "sst2")] == 1


# ---------------------------------------------------------------------------- pretraining corpus

def test_pretraining_corpus_has_no_dev_sentence_and_parses_with_the_project_reader(
        fake_src, tmp_path, small_tokenizer):
    out = tmp_path / "out"
    reviews = CLEAN_REVIEWS + [LEAKING_REVIEW, PLANTED_REVIEW, SHORT_REVIEW]
    m = corpus_script.build(fake_src, out, wikitext=["wiki/wiki.txt"], heldout_imdb=3,
                            heldout_wiki=0, imdb_texts=reviews)
    removed = m["dev_leakage"]["removed"]
    assert removed == {"imdb/substring/sst2": 2,              # LEAKING_, PLANTED_REVIEW whole
                       "imdb_sentence/exact/sst2": 1,         # SHORT_REVIEW: one sentence
                       "wikitext_sentence/exact/sst2": 1}     # "Unflinchingly bleak ..."
    docs = read_documents([out / "pretrain_train.txt"], "lines")
    held = read_documents([out / "pretrain_heldout.txt"], "lines")
    assert len(held) == 3 and len(docs) + len(held) == len(reviews) - 2 + 2
    assert ["Some context first.", "More words follow here."] in docs + held
    assert m["files"]["train"]["documents"] == len(docs)
    assert m["files"]["train"]["sentences"] == sum(map(len, docs))
    dev = {C.normalize(s) for s in SST2_DEV}
    for doc in docs + held:
        assert not dev & {C.normalize(s) for s in doc}
        assert "subtle strength" not in " ".join(doc).lower()
    assert not {tuple(d) for d in docs} & {tuple(d) for d in held}
    assert ["The second article talks about [UNK] things .", "It has two sentences ."] in docs
    data = PretrainingDataset.from_files([out / "pretrain_train.txt"], small_tokenizer,
                                         max_seq_length=32, batch_size=4)
    batch = next(data.batches(0))
    assert batch["input_ids"].shape[0] == 4 and len(data.documents) == len(docs)
    assert json.loads((out / "pretrain_manifest.json").read_text())["files"] == m["files"]


# ---------------------------------------------------------------------------- transfer sets

def test_sst2_transfer_set_parses_with_load_jsonl_and_holds_no_dev_sentence(fake_src, tmp_path):
    out = tmp_path / "out"
    reviews = CLEAN_REVIEWS + [LEAKING_REVIEW, PLANTED_REVIEW, SHORT_REVIEW]
    m = transfer_script.build("sst2", fake_src, out, imdb_texts=reviews)
    rows = load_jsonl(out / "transfer_sst2.jsonl", num_labels=2, is_pair=False,
                      require_label=False)
    texts = [r.text_a for r in rows]
    assert all(r.label is None and r.text_b is None for r in rows)
    assert len(texts) == m["file"]["rows"]
    removed = m["dev_leakage"]["removed"]
    assert removed == {"imdb_review/substring/sst2": 2,       # LEAKING_, PLANTED_REVIEW whole
                       "imdb_sentence/exact/sst2": 1,          # SHORT_REVIEW's dev sentence
                       "sst2_train_sentence/exact/sst2": 1}    # "Very  Bad . "
    dev = {C.normalize(s) for s in SST2_DEV}
    assert not dev & {C.normalize(t) for t in texts}
    keys = [C.normalize(t) for t in texts]
    assert len(keys) == len(set(keys))                    # deduplicated
    assert "hide new secretions from the parental units" in texts
    assert "The plot was fine." in texts                  # 12 copies, one kept
    assert m["sources"]["duplicates_dropped"] >= 11
    assert all(3 <= len(t.split()) <= 64 for t in texts if t[0].isupper())
    capped = transfer_script.build("sst2", fake_src, tmp_path / "capped", imdb_texts=reviews,
                                   max_sentences=5)
    assert capped["file"]["rows"] == 5 and capped["sources"]["sst2_train"]["kept"] == 3


def test_mrpc_transfer_set_is_unlabelled_pairs_without_dev_sentences(fake_src, tmp_path):
    m = transfer_script.build("mrpc", fake_src, tmp_path)
    rows = load_jsonl(tmp_path / "transfer_mrpc.jsonl", num_labels=2, is_pair=True,
                      require_label=False)
    assert [(r.text_a, r.text_b) for r in rows] == [MRPC_TRAIN[0]]
    assert m["dev_leakage"]["removed"] == {"mrpc_train_pair/exact/mrpc": 1}


# ---------------------------------------------------------------------------- the shared data

@pytest.fixture(scope="module")
def real_outputs(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("corpora")
    corpus = corpus_script.build(data_dir, out)
    transfer = transfer_script.build("sst2", data_dir, out)
    return out, corpus, transfer


def long_dev_sentences(data_dir):
    """Normalised SST-2 dev sentences of at least MIN_SUBSTRING_WORDS words."""
    return [k for k in map(C.normalize, C.sst2_sentences(data_dir, "dev"))
            if len(k.split()) >= C.MIN_SUBSTRING_WORDS]


def test_real_pretraining_corpus_holds_no_sst2_dev_sentence(real_outputs, data_dir):
    out, manifest, _ = real_outputs
    dev = {C.normalize(s) for s in C.sst2_sentences(data_dir, "dev")}
    for name in ("train", "heldout"):
        docs = read_documents([out / f"pretrain_{name}.txt"], "lines")
        assert len(docs) == manifest["files"][name]["documents"]
        assert not dev & {C.normalize(s) for doc in docs for s in doc}
        # every document as one normalised text, then a plain substring search per dev sentence
        text = "\n" + "\n".join(" " + C.normalize(" ".join(doc)) + " " for doc in docs) + "\n"
        assert [k for k in long_dev_sentences(data_dir) if f" {k} " in text] == []
    assert manifest["files"]["train"]["documents"] > 20000
    assert 250 <= manifest["files"]["heldout"]["documents"] <= 400


def test_real_sst2_transfer_set_holds_no_sst2_dev_sentence(real_outputs, data_dir):
    out, _, manifest = real_outputs
    rows = load_jsonl(out / "transfer_sst2.jsonl", num_labels=2, is_pair=False,
                      require_label=False)
    assert len(rows) == manifest["file"]["rows"] > 250000
    keys = [C.normalize(r.text_a) for r in rows]
    assert not {C.normalize(s) for s in C.sst2_sentences(data_dir, "dev")} & set(keys)
    text = "\n" + "\n".join(f" {k} " for k in keys) + "\n"
    assert [k for k in long_dev_sentences(data_dir) if f" {k} " in text] == []
