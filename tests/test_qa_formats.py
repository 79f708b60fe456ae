"""Benchmark annotation loaders (`evaluation.formats`) on small files shaped as each benchmark ships them.

Each fixture in ``tests/data/qa_formats/`` copies the field layout of the benchmark's own annotation file
(values invented); the tests check the letters, video paths, times, categories and skip counts the
loaders derive, and that a record missing a documented field raises an error naming the field.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mosaic_sglang.frontend.evaluation.formats import FORMATS, load_questions, load_set
from mosaic_sglang.frontend.evaluation.qa_items import QAFormatError, write_jsonl

DATA = Path(__file__).parent / "data" / "qa_formats"


def by_id(items):
    return {item.qid: item for item in items}


def test_videomme_rows_json_and_parquet_agree(tmp_path):
    rows = json.loads((DATA / "videomme_rows.json").read_text())
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    parquet = tmp_path / "test-00000-of-00001.parquet"
    pd.DataFrame(rows).to_parquet(parquet)
    from_json = load_questions("videomme", DATA / "videomme_rows.json", video_root="/videos")
    from_parquet = load_questions("videomme", parquet, video_root="/videos")
    assert from_json == [item for item in from_parquet]
    items = by_id(from_json)
    assert [i.answer for i in from_json] == ["C", "A", "D"]
    assert items["001-1"].video == "/videos/fFjv93ACGo8.mp4"
    assert items["001-1"].options[0] == "Apples." and len(items["001-1"].options) == 4
    assert [i.category for i in from_json] == ["short", "short", "long"]
    assert all(i.timestamp is None and i.source == "videomme" for i in from_json)


def test_videomme_nested_release_defaults_videos_next_to_the_file():
    (item,) = load_questions("videomme", DATA / "videomme_nested.json")
    assert (item.qid, item.answer, item.category) == ("002-1", "B", "medium")
    assert item.video == str(DATA / "abcDEF.mp4")
    assert item.options == ("Tennis.", "Golf.", "Rugby.", "Chess.")


def test_mlvu_folder_maps_answer_text_to_letters_and_skips_open_ended(tmp_path):
    (tmp_path / "1_plotQA").mkdir()
    (tmp_path / "1_plotQA" / "movie101_67.mp4").write_bytes(b"")
    loaded = load_set("mlvu", DATA / "mlvu_json", video_root=str(tmp_path))
    assert loaded.skipped == {"open-ended (no candidates)": 1}
    first, second = loaded.items
    assert (first.answer, second.answer) == ("A", "B")
    assert first.qid == "1_plotQA/0" and first.category == "plotQA" and second.duration == 512.5
    # a video in the task's subfolder is found there; otherwise it is looked for in the root
    assert second.video == str(tmp_path / "1_plotQA" / "movie101_67.mp4")
    assert first.video == str(tmp_path / "movie101_66.mp4")


def test_longvideobench_choices_groups_and_test_split():
    items = load_questions("longvideobench", DATA / "lvb_val.json", video_root="/lvb/videos")
    assert [(i.qid, i.answer, i.category) for i in items] == [("86CxyhFV9MI_0", "C", "600s"),
                                                             ("aaaBBBccc_1", "A", "15s")]
    assert items[0].duration == 427.96 and len(items[0].options) == 5 and len(items[1].options) == 2
    assert items[1].video == "/lvb/videos/aaaBBBccc.mp4"
    with pytest.raises(QAFormatError, match=r"lvb_test_wo_gt.json: expected at least one longvideobench question"):
        load_questions("longvideobench", DATA / "lvb_test_wo_gt.json")


def test_egoschema_uses_the_public_subset_answers():
    loaded = load_set("egoschema", DATA / "egoschema", video_root="/ego")
    assert loaded.skipped == {"no public answer": 1}
    assert [i.answer for i in loaded.items] == ["B", "E"]
    assert loaded.items[0].video == "/ego/001934bb-81bd-4cd8-a574-0472ef3f6678.mp4"
    assert len(loaded.items[0].options) == 5


def test_egoschema_without_answers_file_names_it(tmp_path):
    (tmp_path / "questions.json").write_text((DATA / "egoschema" / "questions.json").read_text())
    with pytest.raises(QAFormatError, match=r"subset_answers.json: expected EgoSchema's answers file"):
        load_questions("egoschema", tmp_path / "questions.json")


def test_ovo_bench_times_and_skipped_forward_tasks():
    loaded = load_set("ovo_bench", DATA / "ovo_bench_new.json", video_root="/ovo/src_videos")
    assert loaded.skipped == {"forward active responding (REC)": 1}
    epm, ocr = loaded.items
    assert (epm.answer, epm.timestamp, epm.category) == ("D", 52.5, "EPM")
    assert (ocr.answer, ocr.timestamp, ocr.category) == ("B", 10.0, "OCR")
    assert epm.video == "/ovo/src_videos/COIN/xyz.mp4"


def test_ovo_bench_split_dict_reads_every_part(tmp_path):
    records = json.loads((DATA / "ovo_bench_new.json").read_text())
    split = tmp_path / "ovo.json"
    split.write_text(json.dumps({"backward": records[:1], "realtime": records[1:2], "forward": records[2:]}))
    assert [i.category for i in load_questions("ovo_bench", split)] == ["EPM", "OCR"]


def test_streaming_bench_clock_times_and_unprefixed_options():
    loaded = load_set("streaming_bench", DATA / "streaming_bench.json", video_root="/sb")
    assert loaded.skipped == {"open-ended (no options)": 1}
    first, second = loaded.items
    assert (first.qid, first.answer, first.timestamp) == ("1_1", "A", 41.0)
    assert (second.qid, second.answer, second.timestamp) == ("1_2", "B", 65.5)
    assert first.options[0] == "A racket" and second.options[1] == "Two"
    assert first.category == "Object Perception" and first.video == "/sb/sample_1.mp4"


@pytest.mark.parametrize("fmt, fixture, field, edit", [
    ("videomme", "videomme_rows.json", "answer", lambda r: r[0].update(answer="E")),
    ("videomme", "videomme_rows.json", "options", lambda r: r[1].pop("options")),
    ("videomme", "videomme_rows.json", "videoID/video_id", lambda r: [r[0].pop("videoID"), r[0].pop("video_id")]),
    ("longvideobench", "lvb_val.json", "correct_choice", lambda r: r[0].update(correct_choice="two")),
    ("longvideobench", "lvb_val.json", "video_path", lambda r: r[1].pop("video_path")),
    ("ovo_bench", "ovo_bench_new.json", "realtime", lambda r: r[0].pop("realtime")),
    ("ovo_bench", "ovo_bench_new.json", "answer", lambda r: r[1].update(gt=7)),
    ("streaming_bench", "streaming_bench.json", "time_stamp",
     lambda r: r[0]["questions"][0].update(time_stamp="soon")),
])
def test_a_record_without_a_documented_field_is_named(tmp_path, fmt, fixture, field, edit):
    records = json.loads((DATA / fixture).read_text())
    edit(records)
    broken = tmp_path / fixture
    broken.write_text(json.dumps(records))
    with pytest.raises(QAFormatError) as caught:
        load_questions(fmt, broken)
    message = str(caught.value)
    assert str(broken) in message and f"{field}: expected" in message


def test_jsonl_passes_through_and_refuses_a_video_root(tmp_path):
    items = load_questions("videomme", DATA / "videomme_rows.json", video_root=str(tmp_path))
    path = write_jsonl(items, tmp_path / "set.jsonl")
    assert load_questions("jsonl", path) == [
        type(i)(**{**i.__dict__, "source": "jsonl"}) for i in items]
    with pytest.raises(ValueError, match=r"video_root: expected None for the jsonl format"):
        load_questions("jsonl", path, video_root=str(tmp_path))
    with pytest.raises(ValueError, match=r"format: expected one of \['jsonl', 'videomme'"):
        load_questions("video-mme", path)
    assert set(FORMATS) == {"videomme", "mlvu", "longvideobench", "egoschema", "ovo_bench", "streaming_bench"}


def test_invalid_json_and_missing_file_are_named(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[{")
    with pytest.raises(QAFormatError, match=r"bad.json: not valid JSON"):
        load_questions("mlvu", bad)
    with pytest.raises(QAFormatError, match=r"nothing.json: expected an annotation file, got no such file"):
        load_questions("ovo_bench", tmp_path / "nothing.json")
