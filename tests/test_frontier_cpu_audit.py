"""The audit of results/frontier-cpu's plateau stops (results/frontier-cpu/plateau-audit): the committed tables are
what its script finds on the committed runs, the audit's runs replay the stopped ones exactly up to the stop, and
the Zoology Figure 2 verdicts it reports are the judge's."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "results" / "frontier-cpu" / "plateau-audit"
pytestmark = pytest.mark.skipif(not (FOLDER / "plateau_audit.csv").is_file(), reason="no audit committed")


@pytest.fixture(scope="module")
def audit_script():
    spec = importlib.util.spec_from_file_location("frontier_plateau_audit", FOLDER / "audit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_plateau_stop_is_audited_and_its_full_run_replays_it_to_the_stop(audit_script):
    audit = audit_script.audit()
    assert len(audit) == len(audit_script.stopped_trials()) > 0
    assert (audit["accuracy_full_at_stop"] - audit["accuracy"]).abs().max() < 1e-9  # one run up to the stop
    assert (audit["steps_full"] >= audit["steps"]).all()
    longer = audit[audit["under_trained_full"].astype(bool)]
    assert longer["accuracy_2x"].notna().all()
    assert ((longer["steps_2x"] == 2 * longer["steps_full"]) | (longer["accuracy_2x"] >= 0.99)).all()  # or threshold


def test_the_committed_audit_is_what_its_script_finds(audit_script):
    audit = audit_script.audit().reset_index()
    committed = pd.read_csv(FOLDER / "plateau_audit.csv")
    assert committed[audit_script.KEYS].astype(str).values.tolist() == \
        audit[audit_script.KEYS].astype(str).values.tolist(), "run python results/frontier-cpu/plateau-audit/audit.py"
    for column in ("gain", "accuracy_full", "accuracy_2x"):
        assert committed[column].fillna(-1).round(4).tolist() == audit[column].fillna(-1).round(4).tolist(), column


def test_the_committed_audited_verdicts_are_the_judges(audit_script):
    claims = audit_script.claims_audited()
    committed = pd.read_csv(FOLDER / "claims_audited.csv", keep_default_na=False)
    for column in ("claim", "verdict", "verdict_full", "verdict_2x"):
        assert committed[column].tolist() == claims[column].tolist(), column
