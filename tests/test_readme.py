"""README's two commands are the contract with new users; CI must run the same tests."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bash_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_ci_runs_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    blocks = _bash_blocks(readme)
    test_cmds = [b for b in blocks if "pytest" in b]
    assert test_cmds, "README has no bash block with the pytest command"
    pytest_part = re.search(r"python -m pytest[^\n&]*", test_cmds[0]).group(0).strip()
    assert pytest_part in ci, f"{pytest_part!r} from README is not what .ci/run runs"


def test_readme_quickstart_uses_shipped_sample():
    readme = (ROOT / "README.md").read_text()
    quick = _bash_blocks(readme)[0]
    assert "labeleff gui --sample" in quick
    key = re.search(r"--sample (\w+)", quick).group(1)
    assert key in (ROOT / "napari.yaml").read_text()
