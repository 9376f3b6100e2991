"The benchmarks' quick mode runs end to end (a smoke run: the figures are measured, never asserted)"
import json, os, subprocess, sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent

def test_bench_quick(tmp_path):
    out = tmp_path/'bench.json'
    r = subprocess.run([sys.executable, '-m', 'bench', '--quick', '--out', str(out)], cwd=root, capture_output=True,
                       text=True, timeout=300, env=os.environ | {'LITELLM_LOCAL_MODEL_COST_MAP': 'True'})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    for fig in '123456': assert f'\n{fig} ' in r.stdout, r.stdout
    res = json.loads(out.read_text())
    assert res, res

def test_bench_early_quick(tmp_path):
    out = tmp_path/'early.json'
    r = subprocess.run([sys.executable, '-m', 'bench.early', '--quick', '--out', str(out)], cwd=root, capture_output=True,
                       text=True, timeout=300, env=os.environ | {'LITELLM_LOCAL_MODEL_COST_MAP': 'True'})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    rows = json.loads(out.read_text())['rows']
    assert [(x['cls'], x['format']) for x in rows] == [(c, f) for f in ('openai', 'anthropic') for c in ('Chat', 'AsyncChat')], rows
    assert all(x['early'] and x['without'] for x in rows), rows
