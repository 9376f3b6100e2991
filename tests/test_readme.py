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

def test_tour_runs_as_a_script():
    "The README's tour, its python blocks one after another in a plain `python` process, prints what the tour shows"
    md = (root/'README.md').read_text()
    tour = md[md.index('## A tour'):md.index('\n## ', md.index('## A tour') + 1)]
    script = '\n\n'.join(re.findall(r"```python\n(.*?)\n```", tour, re.S)) + '\nsim.close()\n'
    r = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, cwd=root, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split('\n')[:3] == ['2 + 2 = 4.', '15 + 23 = 38.', "['user', 'assistant', 'tool', 'assistant']"], r.stdout
    assert r.stdout.rstrip().endswith('Counting: 1, 2, 3.'), r.stdout
