import json

import pytest

from mosaic_pretrain.cli import main
from mosaic_pretrain.data.convert import MANIFEST, ConvertOptions, convert, parse_size
from mosaic_pretrain.data.sources import SourceOptions, expand_local_sources, iter_file_documents
from mosaic_pretrain.errors import ConfigError, DataError
from tests.data_helpers import corpus_texts, write_jsonl

QUIET = dict(progress=False, log=lambda line: None)


def options(tmp_path, **overrides) -> ConvertOptions:
    return ConvertOptions(**{"sources": (str(tmp_path / "src"),), **overrides})


@pytest.fixture
def source(tmp_path):
    """40 real documents in a compressed .jsonl and a .txt of blank-line separated paragraphs."""
    texts = corpus_texts(40)
    write_jsonl(tmp_path / "src" / "a.jsonl.xz", texts[:30])
    (tmp_path / "src" / "b.txt").write_text("\n\n".join(texts[30:]) + "\n")
    return texts


def test_sources_are_read_in_order(tmp_path, source):
    files = expand_local_sources([str(tmp_path / "src")])
    assert [f.name for f in files] == ["a.jsonl.xz", "b.txt"]
    documents = [d for f in files for d in iter_file_documents(f, SourceOptions())]
    assert documents == source


def test_convert_writes_complete_splits_with_summary(tmp_path, source):
    summaries = convert(options(tmp_path, val_fraction=0.25), tmp_path / "out", **QUIET)
    assert summaries["train"].documents + summaries["val"].documents == 40
    assert summaries["val"].documents > 0 and summaries["train"].tokens > 1000
    for split in ("train", "val"):
        assert (tmp_path / "out" / split / "index.json").exists()
    manifest = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert manifest["splits"]["train"]["documents"] == summaries["train"].documents
    assert not list((tmp_path / "out").glob(".*partial"))


def test_output_does_not_depend_on_worker_count(tmp_path):
    """Several chunks of documents per worker, so chunk order across workers matters."""
    paragraphs = [p for text in corpus_texts(80) for p in text.split("\n") if p.strip()]
    assert len(paragraphs) > 3 * 256
    write_jsonl(tmp_path / "src" / "many.jsonl", paragraphs)
    for workers in (1, 2):
        convert(
            options(tmp_path, output_format="tokens"),
            tmp_path / f"w{workers}",
            workers=workers,
            **QUIET,
        )
    one, two = (sorted((tmp_path / f"w{n}" / "train").iterdir()) for n in (1, 2))
    assert [f.read_bytes() for f in one] == [f.read_bytes() for f in two]


def test_rerun_skips_complete_splits_and_refuses_other_options(tmp_path, source):
    convert(options(tmp_path), tmp_path / "out", **QUIET)
    stamp = (tmp_path / "out" / "train" / "index.json").stat().st_mtime_ns
    lines = []
    assert convert(options(tmp_path), tmp_path / "out", progress=False, log=lines.append) == {}
    assert any("already complete" in line for line in lines)
    assert (tmp_path / "out" / "train" / "index.json").stat().st_mtime_ns == stamp
    with pytest.raises(DataError, match=r"made with other options \(output_format\)"):
        convert(options(tmp_path, output_format="tokens"), tmp_path / "out", **QUIET)
    convert(options(tmp_path, output_format="tokens"), tmp_path / "out", overwrite=True, **QUIET)
    manifest = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert manifest["options"]["output_format"] == "tokens"


def test_an_interrupted_conversion_never_looks_complete_and_reruns_cleanly(tmp_path, source):
    broken = tmp_path / "src" / "c.jsonl"
    broken.write_text(json.dumps({"text": "fine"}) + "\n" + "{not json\n")
    with pytest.raises(DataError, match=r"c.jsonl:2: not valid JSON"):
        convert(options(tmp_path), tmp_path / "out", **QUIET)
    assert not (tmp_path / "out" / "train").exists()
    assert json.loads((tmp_path / "out" / MANIFEST).read_text())["splits"] == {}
    broken.write_text(json.dumps({"text": "fine"}) + "\n")  # the source changed: start over
    lines = []
    convert(options(tmp_path), tmp_path / "out", progress=False, log=lines.append)
    assert any("starting over" in line for line in lines)
    assert (tmp_path / "out" / "train" / "index.json").exists()


def test_a_split_not_yet_recorded_is_redone(tmp_path, source):
    """Killed after the rename but before the manifest update: the split is not trusted."""
    convert(options(tmp_path), tmp_path / "out", **QUIET)
    manifest_path = tmp_path / "out" / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["splits"] = {}
    manifest_path.write_text(json.dumps(manifest))
    (tmp_path / "out" / ".train.partial").mkdir()
    lines = []
    convert(options(tmp_path), tmp_path / "out", progress=False, log=lines.append)
    assert sum("left unfinished by an interrupted run" in line for line in lines) == 2
    assert "train" in json.loads(manifest_path.read_text())["splits"]


def test_only_our_folders_are_ever_removed(tmp_path, source):
    (tmp_path / "out" / "someone_elses").mkdir(parents=True)
    convert(options(tmp_path), tmp_path / "out", **QUIET)
    convert(options(tmp_path, output_format="tokens"), tmp_path / "out", overwrite=True, **QUIET)
    assert (tmp_path / "out" / "someone_elses").is_dir()


def test_a_split_folder_we_did_not_make_is_refused(tmp_path, source):
    (tmp_path / "out" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match=r"exists but no conversion record"):
        convert(options(tmp_path), tmp_path / "out", **QUIET)


def test_changed_source_data_is_noticed(tmp_path, source):
    convert(options(tmp_path), tmp_path / "out", **QUIET)
    with (tmp_path / "src" / "b.txt").open("a") as handle:
        handle.write("\nA new paragraph.\n")
    with pytest.raises(DataError, match=r"other options \(source_files\)"):
        convert(options(tmp_path), tmp_path / "out", **QUIET)


def test_split_names_cannot_escape_the_output_folder(tmp_path):
    with pytest.raises(ConfigError, match=r"split name '\.\.' must be letters"):
        convert(
            ConvertOptions(sources=("hf:x",), hf_splits=(("..", "train"),)),
            tmp_path / "out",
            **QUIET,
        )


def test_explicit_val_source(tmp_path, source):
    write_jsonl(tmp_path / "val" / "v.jsonl", corpus_texts(45)[40:])
    summaries = convert(
        options(tmp_path, val_sources=(str(tmp_path / "val"),)), tmp_path / "out", **QUIET
    )
    assert summaries["train"].documents == 40 and summaries["val"].documents == 5


def test_hugging_face_source_streams_split_by_split(tmp_path):
    """The hub code path, pointed at a local dataset folder (no network here)."""
    pytest.importorskip("datasets")
    texts = corpus_texts(12)
    write_jsonl(tmp_path / "hfdata" / "train.jsonl", texts[:9])
    write_jsonl(tmp_path / "hfdata" / "validation.jsonl", texts[9:])
    summaries = convert(
        ConvertOptions(sources=(f"hf:{tmp_path / 'hfdata'}",)), tmp_path / "out", **QUIET
    )
    assert summaries["train"].documents == 9 and summaries["val"].documents == 3


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [
        ('{"body": "x"}\n', "a.jsonl", r"a.jsonl:1: no 'text' field; name the text field"),
        ('{"text": ""}\n', "a.jsonl", r"a.jsonl:1: empty document; remove it or pass --skip-empty"),
        ('{"text": 3}\n', "a.jsonl", r"field 'text' is int, not a string"),
        (b'{"text": "caf\xe9"}\n', "a.jsonl", r"a.jsonl: invalid UTF-8 .* re-encode the file"),
        (b"\xfd7zXZ truncated", "a.jsonl.xz", r"a.jsonl.xz: cannot be read"),
        ("text", "a.csv", r"a.csv: unsupported file type"),
    ],
    ids=["no-text-field", "empty", "not-a-string", "invalid-utf8", "corrupt-xz", "suffix"],
)
def test_bad_source_files(tmp_path, content, name, message):
    path = tmp_path / "src" / name
    path.parent.mkdir()
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    with pytest.raises(DataError, match=message) as error:
        convert(options(tmp_path, sources=(str(path),)), tmp_path / "out", **QUIET)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out" / "train").exists()


def test_empty_documents_can_be_skipped(tmp_path):
    write_jsonl(tmp_path / "src" / "a.jsonl", ["one document", "", "another"])
    summaries = convert(
        options(tmp_path, source_options=SourceOptions(skip_empty=True)), tmp_path / "out", **QUIET
    )
    assert summaries["train"].documents == 2


def test_missing_source_and_bad_options(tmp_path):
    with pytest.raises(DataError, match=r"no such file or directory \(for a Hugging Face"):
        convert(ConvertOptions(sources=(str(tmp_path / "nope"),)), tmp_path / "out", **QUIET)
    with pytest.raises(
        ConfigError, match=r"--val-fraction=1.5 is out of range: it must be in \[0, 1\)"
    ):
        convert(ConvertOptions(val_fraction=1.5), tmp_path / "out", **QUIET)
    with pytest.raises(ConfigError, match="size '64 parsecs' is not understood"):
        parse_size("64 parsecs")
    assert parse_size("64mb") == 64 << 20


def test_cli_convert_and_its_one_line_errors(tmp_path, source, capsys):
    out = str(tmp_path / "out")
    assert (
        main(
            [
                "convert",
                "--source",
                str(tmp_path / "src"),
                "--out",
                out,
                "--no-progress",
                "--format",
                "tokens",
                "--val-fraction",
                "0.2",
            ]
        )
        == 0
    )
    assert "train: " in capsys.readouterr().out
    assert main(["convert", "--source", str(tmp_path / "src"), "--out", out, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "made with other options" in err


def test_hugging_face_rows_without_text_are_one_line_errors(tmp_path):
    pytest.importorskip("datasets")
    folder = tmp_path / "hfdata"
    folder.mkdir()
    (folder / "train.jsonl").write_text('{"text": "fine"}\n{"text": null}\n')
    with pytest.raises(DataError, match=r"row 2: field 'text' is NoneType, not a string"):
        convert(
            ConvertOptions(sources=(f"hf:{folder}",), hf_splits=(("train", "train"),)),
            tmp_path / "out",
            **QUIET,
        )
