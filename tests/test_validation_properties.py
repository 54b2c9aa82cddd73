"""Validation checked by generated inputs: one schema leaf of the smoke recipe (or of a GLUE
sweep, or one `convert` option) set to a value drawn to break it, and `check` either accepts it
or answers with our one-line error, never anything else; a value it accepts trains.

Examples are derandomized (drawn from a fixed seed derived from each test), so a failure
reproduces on every machine; the count is bounded for CI. `HYPOTHESIS_PROFILE=thorough` draws
many more locally.
"""

import itertools
import json
import math
import os
import typing
from dataclasses import fields, is_dataclass
from enum import Enum
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mosaic_pretrain.cli import check_file, main
from mosaic_pretrain.config.schema import PretrainConfig
from mosaic_pretrain.data.convert import ConvertOptions, convert
from mosaic_pretrain.errors import ConfigError, MosaicPretrainError
from mosaic_pretrain.glue.config import SweepConfig, load_sweep
from mosaic_pretrain.ranges import RANGE_KEY, Items, Range, TimeRange

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "configs" / "pretrain" / "smoke.yaml"
COMMON = dict(
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile("ci", max_examples=150, **COMMON)
settings.register_profile("thorough", max_examples=3000, **COMMON)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)


def schema_leaves(schema: type, prefix: str = "") -> list[tuple[str, typing.Any, object]]:
    """(dotted key, annotation, valid-values rule) of every leaf field of a schema, at every
    depth; a mapping of sections (streams, task_settings) is entered under the name `a`."""
    leaves = []
    for item in fields(schema):
        key = f"{prefix}{item.name}"
        sections = _sections(item.type)
        if sections:
            for section, mapping in sections:
                leaves += schema_leaves(section, f"{key}.a." if mapping else f"{key}.")
        else:
            leaves.append((key, item.type, item.metadata.get(RANGE_KEY)))
    return leaves


def _sections(annotation) -> list[tuple[type, bool]]:
    if is_dataclass(annotation):
        return [(annotation, False)]
    if typing.get_origin(annotation) is dict:
        return [(a, True) for a in typing.get_args(annotation) if is_dataclass(a)]
    return [found for a in typing.get_args(annotation) for found in _sections(a)]


RECIPE_LEAVES = schema_leaves(PretrainConfig)
SWEEP_LEAVES = schema_leaves(SweepConfig)


def yaml_text(value) -> str:
    """A value as the right-hand side of key=value (flow YAML; JSON is YAML)."""
    if isinstance(value, float) and not math.isfinite(value):
        return ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf")
    return json.dumps(value)


# Values a typo-prone hand writes, in YAML as typed after `key=`.
JUNK = [
    "", " ", "-1", "0", "1", "-0.0", "1e999", "-1e999", ".nan", ".inf", "-.inf", "nan", "inf",
    "null", "~", "[]", "{}", "[1, 2]", "[[1]]", "{a: 1}", "{a: {b: 2}}", "true", "no", "???",
    "${oops}", "${seed}", "x" * 300, "ba", "0ba", "-5ba", "1.5ba", "0.5dur", "2dur", "1ep",
    "99999999999999999999999ba", "1e30", "1e-30", "2147483648", "-2147483649",
    "9223372036854775808", '"a\\0b"', '"{x}"', '"{"', "'1'", "fp16", "../../etc",
]  # fmt: skip
scalars = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.booleans(),
    st.none(),
)
values = st.one_of(
    st.sampled_from(JUNK),
    scalars.map(yaml_text),
    st.lists(scalars.filter(lambda v: not isinstance(v, float) or math.isfinite(v)), max_size=3)
    .map(yaml_text),
    st.dictionaries(st.text("ab", min_size=1, max_size=2), st.integers(-3, 3), max_size=2)
    .map(yaml_text),
    st.text(max_size=8),  # raw text: a value that may not even be YAML
)  # fmt: skip


@st.composite
def typo_key(draw, leaves) -> str:
    """A real key with one letter of one part changed, added or dropped."""
    key = draw(st.sampled_from(leaves))[0]
    parts = key.split(".")
    index = draw(st.integers(0, len(parts) - 1))
    part = parts[index]
    where = draw(st.integers(0, len(part)))
    letter = draw(st.sampled_from("abcdefghijklmnopqrstuvwxyz_"))
    mutated = draw(
        st.sampled_from([part[:where] + letter + part[where:], part[:where] + part[where + 1 :]])
    )
    parts[index] = mutated or "x"
    return ".".join(parts)


def mutations(leaves) -> st.SearchStrategy[str]:
    keys = st.one_of(st.sampled_from([key for key, _, _ in leaves]), typo_key(leaves))
    return st.tuples(keys, values).map(lambda pair: f"{pair[0]}={pair[1]}")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("props") / "corpus"
    options = ConvertOptions(max_documents=60, val_fraction=0.2, compression="none")
    convert(options, folder, progress=False, log=lambda line: None)
    return folder


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """Relative folders of a mutated recipe land here, not in the repository."""
    folder = tmp_path_factory.mktemp("cwd")
    before = os.getcwd()
    os.chdir(folder)
    yield folder
    os.chdir(before)


def base_overrides(corpus: Path, folder: Path) -> list[str]:
    return [
        f"data_local={corpus}",
        "train_loader.dataset.convert_builtin_corpus=false",
        "eval_loader.dataset.convert_builtin_corpus=false",
        f"save_folder={folder}/ckpt",
        "export_folder=null",
        "autoresume=false",
    ]


def assert_one_line_problems(found) -> None:
    assert isinstance(found, list)
    for problem in found:
        assert isinstance(problem, str) and problem.strip(), found
        assert "\n" not in problem, problem
        assert "Traceback" not in problem, problem


# The cases found by hand, in the issue: each must be refused in one line, not crash.
# (eval_interval=0ba, also listed there, is legal: it is the documented way to turn evaluation
# off, and test_console runs it.)
REPORTED = [
    "optimizer.betas={}", "optimizer.betas={a: 1}", "seed=-1",
    "callbacks.speed_monitor.window_size=0", "optimizer.lr=.inf", "optimizer.lr=1e30",
    "optimizer.eps=.inf", "optimizer.weight_decay=.inf", "max_duration=0ba", "save_interval=0ba",
    "console_log_interval=0ba", "max_seq_len=2147483648", "global_train_batch_size=2147483648",
    "train_loader.num_workers=2147483648",
]  # fmt: skip


@given(mutation=mutations(RECIPE_LEAVES))
@example(mutation="optimizer.betas={}")
@example(mutation="seed=-1")
@example(mutation="save_folder=runs/{oops}")
@example(mutation='run_name="a\\0b"')
def test_check_accepts_a_mutated_recipe_or_names_its_problems(corpus, workdir, mutation):
    found = check_file(SMOKE, [*base_overrides(corpus, workdir), mutation])
    assert_one_line_problems(found)


@pytest.mark.parametrize("mutation", REPORTED)
def test_the_reported_bad_values_are_refused_in_one_line(corpus, workdir, mutation):
    found = check_file(SMOKE, [*base_overrides(corpus, workdir), mutation])
    assert_one_line_problems(found)
    key = mutation.split("=", 1)[0]
    assert len(found) >= 1 and any(key in problem for problem in found), found


GOOD_SWEEP = """\
run_name: props
starting_point: some/checkpoint.pt
data: {local: /data/glue}
tasks: [mnli, rte, sst2]
task_settings:
  sst2: {seeds: [1, 2], lr: 1.0e-4}
"""


@given(mutation=mutations(SWEEP_LEAVES))
@example(mutation="task_settings.sst2.lr=.nan")
@example(mutation="task_settings.sst2.seeds={a: 1}")
@example(mutation="output_folder=runs/{nope}")
def test_a_mutated_glue_sweep_loads_or_fails_with_our_error(tmp_path_factory, mutation):
    path = tmp_path_factory.getbasetemp() / "sweep.yaml"
    path.write_text(GOOD_SWEEP)
    try:
        load_sweep(path, [mutation])
    except ConfigError as error:
        assert_one_line_problems(error.problems)
        assert "\n" not in str(error)


CONVERT_OPTIONS = [
    "--val-fraction", "--max-documents", "--seed", "--shard-size", "--workers", "--format",
    "--compression", "--tokenizer", "--text-field", "--txt-split", "--hf-split",
]  # fmt: skip
option_values = st.one_of(
    st.sampled_from(["-1", "0", "1", "nan", "inf", "-inf", "1e30", "2", "0.5", "abc", "", "64kb",
                     "1gb", "100000gb", "x=", "=y", "train=train", "2147483648", "-2147483649"]),
    st.integers(-(2**40), 2**40).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=6).filter(lambda text: not text.startswith("-")),
)  # fmt: skip


@settings(max_examples=40 if PROFILE == "ci" else 400)
@given(option=st.sampled_from(CONVERT_OPTIONS), value=option_values)
@example(option="--seed", value="-1")
@example(option="--workers", value="0")
@example(option="--val-fraction", value="nan")
def test_convert_refuses_a_bad_option_in_one_line(tmp_path_factory, capsys, option, value):
    source = tmp_path_factory.getbasetemp() / "docs.txt"
    source.write_text("A first paragraph of text.\n\nA second one, a little longer.\n" * 4)
    out = tmp_path_factory.mktemp("out")
    argv = ["convert", "--source", str(source), "--out", str(out), "--max-documents", "4",
            "--no-progress", "--compression", "none", option, value]  # fmt: skip
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse's own refusal: a usage line, exit code 2
        code = exit.code
    assert code in (0, 2)
    err = capsys.readouterr().err.strip().splitlines()
    if code == 2:
        assert err and "Traceback" not in "\n".join(err)
        assert err[-1].startswith(("mosaic-pretrain convert: error:", "usage:", "mosaic-pretrain"))


def accepted_values(key: str, annotation, rule) -> list[str]:
    """Legal values at the edges of a leaf's range (cheap ones: no size past a few units,
    no run longer than a few batches), as key=value text."""
    if isinstance(rule, Range):
        low = rule.low if rule.low is not None else 0
        edge = low + (1 if float(low).is_integer() else 0.0)
        if rule.low_open:
            low = low + (1 if "int" in str(annotation) else 1e-6)
        candidates = [low, edge, *rule.special]
        if rule.high is not None and rule.high <= 1:
            candidates.append(rule.high - (1e-6 if rule.high_open else 0))
        typed = [int(v) if "int" in str(annotation) else float(v) for v in candidates]
        return [yaml_text(v) for v in typed if rule.contains(v)]
    if isinstance(rule, TimeRange):
        units = [u for u in rule.units if not (key == "max_duration" and u in ("ep", "tok"))]
        return [f"1{unit}" if unit != "dur" else "0.5dur" for unit in units]
    if isinstance(rule, Items):
        return [yaml_text([rule.each.low or 0] * (rule.length or 1))]
    arguments = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    for argument in arguments:
        if isinstance(argument, type) and issubclass(argument, Enum):
            return [member.value for member in argument]
        if argument is bool:
            return ["true", "false"]
    return []


EDGE_CASES = sorted(
    {
        f"{key}={value}"
        for key, annotation, rule in RECIPE_LEAVES
        if not key.startswith(("ablation.", "callbacks.glue_sweep.", "loggers."))
        and "streams" not in key
        for value in accepted_values(key, annotation, rule)
    }
)
RUN_NUMBERS = itertools.count()
TINY_RUN = [
    "model.model_config.num_hidden_layers=1",
    "global_train_batch_size=8",
    "device_train_microbatch_size=8",
    "device_eval_batch_size=8",
    "max_duration=2ba",
    "eval_interval=2ba",
    "eval_subset_num_batches=1",
    "save_interval=1ba",
    "console_log_interval=1ba",
    "log_to_console=false",
]


@pytest.mark.slow  # each example trains; `pytest -m 'not slow'` skips it
@settings(max_examples=12 if PROFILE == "ci" else 200)
@given(mutation=st.sampled_from(EDGE_CASES))
@example(mutation="save_num_checkpoints_to_keep=0")
@example(mutation="callbacks.speed_monitor.window_size=1")
@example(mutation="train_loader.dataset.mlm_probability=1e-06")  # no masked token
def test_a_value_check_accepts_trains_without_a_traceback(corpus, workdir, mutation):
    from mosaic_pretrain.commands.train import train
    from mosaic_pretrain.config import load_config

    folder = workdir / f"run{next(RUN_NUMBERS)}"  # a fresh folder for every example
    overrides = [*base_overrides(corpus, folder), *TINY_RUN, mutation]
    if check_file(SMOKE, overrides):
        return  # refused in one line: the first property covers it
    config = load_config(SMOKE, overrides)
    try:
        train(config).close()
    except MosaicPretrainError as error:  # our one-line verdict (a NaN guard, ...) is fine
        assert "\n" not in str(error)


def test_the_readme_table_of_valid_values_is_the_code_s():
    from mosaic_pretrain.commands.valid_values import replace_table

    readme = (ROOT / "README.md").read_text()
    assert replace_table(readme) == readme, "run scripts/valid_values_table.py"
