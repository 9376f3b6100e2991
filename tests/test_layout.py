"""The package's shape: its public names, modules that import alone and in one direction, options declared once"""
import ast, inspect, os, subprocess, sys
from pathlib import Path
import pytest
import lisette
from lisette import Chat, AsyncChat, Options

ROOT = Path(__file__).resolve().parent.parent
MODULES = ['messages', 'tools', 'quirks', 'replies', 'turn', 'store', 'core', 'asink', 'display', 'testing', 'local', 'mcp']

def test_public_names():
    assert sorted(lisette.__all__) == sorted([
        'Chat', 'AsyncChat', 'structured', 'astructured', 'Options', 'Usage', 'mk_msg', 'mk_msgs', 'delta_text',
        'usage_of', 'display_stream', 'adisplay_stream', 'StreamAbandoned', 'StructuredError', 'BudgetExceeded', 'Approval', 'needs_approval', 'start_early', 'ToolError',
        'CANCELLED', 'NOT_RUN'])
    for n in lisette.__all__: assert getattr(lisette, n) is not None, n

@pytest.fixture(scope='module')
def imported_alone()->dict:
    "Each module imported in a fresh interpreter of its own (all at once), with litellm's settings cleared first: its result"
    code = 'import os, sys, lisette.{}; assert os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"; import litellm; assert litellm.suppress_debug_info'
    env = {k:v for k,v in os.environ.items() if not k.startswith('LITELLM')}
    procs = {m: subprocess.Popen([sys.executable, '-c', code.format(m)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
             for m in MODULES}
    return {m: (p.wait(300), p.communicate()[1]) for m,p in procs.items()}

@pytest.mark.parametrize('mod', MODULES)
def test_module_imports_alone(mod, imported_alone):
    "Each module imports alone, with litellm quiet and offline (the package's __init__ runs first)"
    rc, err = imported_alone[mod]
    assert rc == 0, err[-2000:]
    assert 'cost map' not in err.lower(), err[-2000:]

def lisette_imports(mod:str)->set:
    "The lisette modules `mod` imports, read from its source"
    tree = ast.parse((ROOT/'lisette'/f'{mod}.py').read_text())
    found = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom) and n.level == 1 and n.module: found.add(n.module.split('.')[0])
        elif isinstance(n, ast.ImportFrom) and (n.module or '').startswith('lisette.'): found.add(n.module.split('.')[1])
        elif isinstance(n, ast.Import): found |= {a.name.split('.')[1] for a in n.names if a.name.startswith('lisette.')}
    return found

def test_layers_import_downwards_only():
    "messages < tools < quirks < replies < turn < store < core < asink < display: no module imports one after it (no cycle)"
    order = ['messages', 'tools', 'quirks', 'replies', 'turn', 'store', 'core', 'asink', 'display']
    for i, mod in enumerate(order):
        later = lisette_imports(mod) & set(order[i:])
        assert not later, f'lisette.{mod} imports {later}'

def test_no_module_above_a_third():
    lines = {p.name: len(p.read_text().splitlines()) for p in (ROOT/'lisette').glob('*.py')}
    assert max(lines.values()) < sum(lines.values()) / 3, lines

def test_sync_and_async_calls_take_the_same_options():
    sig = lambda f: [(p.name, p.kind, p.default) for p in inspect.signature(f).parameters.values()][1:]
    assert sig(Chat.__call__) == sig(AsyncChat.__call__)
    names = [p[0] for p in sig(Chat.__call__)]
    assert names == ['msg', *[f for f in Options.__dataclass_fields__], 'kw'], names
