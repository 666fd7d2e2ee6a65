"""README.md stays true: its commands exist and its table documentation matches pipelines.schemas."""

import re

from pipelines import schema_docs
from tests.conftest import REPO

README = (REPO / "README.md").read_text()


def test_schema_tables_in_readme_match_the_code():
    assert schema_docs.BEGIN in README, "README.md lost the generated schema block"
    block = README[README.index(schema_docs.BEGIN) : README.index(schema_docs.END) + len(schema_docs.END)]
    assert block == schema_docs.markdown(), (
        "README.md is stale: run `python -m pipelines.schema_docs --write`"
    )


def test_fresh_machine_commands_come_first_and_are_real():
    commands = re.findall(r"```bash\n(.+?)\n```", README, flags=re.S)
    setup_and_run, tests = commands[0], commands[1]
    assert setup_and_run.startswith("pip install -r requirements.txt -e .")
    assert "gunshot batch --input 'examples/*.wav'" in setup_and_run
    assert list((REPO / "examples").glob("*.wav")), "the first command's bundled input is missing"
    assert tests == "bash .ci/run"
    ci = (REPO / ".ci" / "run").read_text()
    assert "pip install" in ci and "-r requirements.txt" in ci and "python -m pytest" in ci


def test_every_linked_doc_exists():
    for link in re.findall(r"\]\((docs/[^)#]+)", README):
        assert (REPO / link).is_file(), link
