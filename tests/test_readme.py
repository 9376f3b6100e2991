"The README is written from nbs/index.ipynb, and CI runs the README's test command"
import re, subprocess, sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent

def test_readme_matches_index_notebook():
    r = subprocess.run([sys.executable, 'tools/readme.py', '--check'], cwd=root, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr

def readme_test_command()->str:
    "The shell command in the README's quick start that runs the tests"
    blocks = re.findall(r"```sh\n(.*?)\n```", (root/'README.md').read_text(), re.S)
    return next(b.strip() for b in blocks if 'pytest' in b)

def test_ci_runs_the_readme_test_command():
    assert readme_test_command() in (root/'.ci'/'run').read_text()
