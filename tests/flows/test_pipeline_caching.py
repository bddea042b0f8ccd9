"""The pipeline's caching contract with a real Prefect (ephemeral API, in process).

One corpus and store per module; the tests run in order and build on each
other's store (each states which stages it expects to run).
"""

from __future__ import annotations

import pytest
from prefect import flow

from flows.pipeline import run_stages
from flows.stages import STAGE_FLOWS
from tests.flows.pipeline_fixtures import statuses, tiny_config, write_corpus

UPSTREAM = ("validate", "shard", "tokenizer", "pretokenize")


@flow(name="lmcore-test-upstream")
def refresh_flow(config, refresh=None):
    return run_stages(config, until="pretokenize", refresh=refresh)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    return {"corpus": write_corpus(root / "corpus.jsonl"), "store": root / "store", "models": root / "models"}


def cfg_for(workdir, **sections):
    return tiny_config(workdir["corpus"], workdir["store"], workdir["models"], **sections)


def test_first_run_computes_every_stage_and_second_run_reports_every_task_cached(workdir):
    flow = STAGE_FLOWS["pretokenize"]
    first = flow(cfg_for(workdir))
    assert statuses(first) == {s: "ran" for s in UPSTREAM}
    assert first["validate"]["summary"]["totals"]["valid"] == 120
    second = flow(cfg_for(workdir))
    assert statuses(second) == {s: "cached" for s in UPSTREAM}
    assert [second[s]["key"] for s in UPSTREAM] == [first[s]["key"] for s in UPSTREAM]


def test_changing_a_tokenizer_setting_reruns_tokenizer_and_below_only(workdir):
    records = STAGE_FLOWS["pretokenize"](cfg_for(workdir, tokenizer={"vocab_size": 320}))
    assert statuses(records) == {"validate": "cached", "shard": "cached", "tokenizer": "ran", "pretokenize": "ran"}


def test_refresh_tokenizer_recomputes_it_and_everything_below_with_the_same_keys(workdir):
    before = STAGE_FLOWS["pretokenize"](cfg_for(workdir))
    after = refresh_flow(cfg_for(workdir), refresh="tokenizer")
    assert statuses(after) == {"validate": "cached", "shard": "cached", "tokenizer": "ran", "pretokenize": "ran"}
    assert after["tokenizer"]["key"] == before["tokenizer"]["key"]
    again = STAGE_FLOWS["pretokenize"](cfg_for(workdir))
    assert set(statuses(again).values()) == {"cached"}
