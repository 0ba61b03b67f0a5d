"""The README's Python examples run against a real catalog, so the documentation cannot rot."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).parent.parent / "README.md"


def test_readme_opens_with_the_two_commands():
    first_block = re.search(r"```sh\n(.*?)```", README.read_text(), re.S).group(1).splitlines()
    assert [line.split("#")[0].strip() for line in first_block] == ["make demo", "make test"]


def test_readme_python_examples_run(database, monkeypatch, capsys):
    for key, value in database.env().items():
        if key.startswith("VISIONLEDGER_"):
            monkeypatch.setenv(key, value)
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, str(README), "exec"), {})
    assert "ImageExcluded" in capsys.readouterr().out
