"The benchmarks' quick mode runs end to end (a smoke run: the figures are measured, never asserted)"
import json, os, subprocess, sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent

def quick(module:str, out:Path):
    "Run `python -m module --quick --out out` from the repo; its output and the JSON it wrote"
    r = subprocess.run([sys.executable, '-m', module, '--quick', '--out', str(out)], cwd=root, capture_output=True,
                       text=True, timeout=300, env=os.environ | {'LITELLM_LOCAL_MODEL_COST_MAP': 'True'})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r.stdout, json.loads(out.read_text())

def test_bench_quick(tmp_path):
    stdout, res = quick('bench', tmp_path/'bench.json')
    for fig in '123456': assert f'\n{fig} ' in stdout, stdout
    assert 'request bodies differ' not in stdout, stdout   # each figure's two sides send the same requests
    assert res, res

def test_bench_early_quick(tmp_path):
    stdout, res = quick('bench.early', tmp_path/'early.json')
    rows = res['rows']
    assert [(x['cls'], x['format']) for x in rows] == [(c, f) for f in ('openai', 'anthropic') for c in ('Chat', 'AsyncChat')], rows
    assert all(x['early'] and x['without'] for x in rows), rows

def test_bench_peers_quick(tmp_path):
    "Beside the stacks installed (the openai SDK always: litellm's own dependency), the table and lisette's ratios to raw litellm"
    stdout, res = quick('bench.peers', tmp_path/'peers.json')
    figs = res['figures']
    got = {(x['figure'], x['stack']) for x in figs}
    for fmt in ('openai', 'anthropic'):
        for fig in ('one turn', 'one tool round', '8 concurrent turns', '100-chunk stream', '20-chunk stream'):
            assert {(f'{fig} ({fmt})', s) for s in ('raw litellm', 'lisette')} <= got, got
    assert all(x['answer_ok'] for x in figs), [x for x in figs if not x['answer_ok']]
    assert all('ttft' in x for x in figs if x['figure'].startswith('20-chunk')), figs
    assert 'lisette / raw litellm (medians):' in stdout and '20-chunk stream (anthropic)' in stdout, stdout

def test_bench_stall_quick(tmp_path):
    "The first request's stall of the event loop, in fresh processes: raw litellm and lisette's two ways, both formats"
    stdout, res = quick('bench.stall', tmp_path/'stall.json')
    rows = res['rows']
    assert {(x['format'], x['side']) for x in rows} == {(f, s) for f in ('openai', 'anthropic') for s in
            ('raw litellm', 'lisette, chat made at start-up', 'lisette, chat made at the call')}, rows
    assert all(x['ok'] and x['stall'] >= 0 for x in rows), rows
