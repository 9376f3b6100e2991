"Write README.md from nbs/index.ipynb: markdown cells as they are, code cells as python blocks, `#| hide` cells left out (`--check` only compares)"
import json, sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent

def render(nb_path=root/'nbs'/'index.ipynb')->str:
    cells = json.loads(Path(nb_path).read_text())['cells']
    def src(c): return ''.join(l for l in c['source'] if not l.startswith('#| eval:')).strip()   # shown, not run by nbdev-test
    parts = [src(c) if c['cell_type']=='markdown' else f"```python\n{src(c)}\n```"
             for c in cells if src(c) and not src(c).startswith('#|')]
    return '\n\n'.join(parts) + '\n'

if __name__ == '__main__':
    md, out = render(), root/'README.md'
    if '--check' in sys.argv: sys.exit(0 if out.exists() and out.read_text()==md else 'README.md is out of date: run python tools/readme.py')
    out.write_text(md)
