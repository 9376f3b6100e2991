"""lisette against raw litellm, the same requests to the same simulator. Each figure is lisette's time over litellm's:
medians of interleaved A/B runs. `python -m bench [--quick] [--only 1,4] [--inproc] [--out PATH]`"""
import argparse, asyncio, gc, json, os, platform, re, statistics, subprocess, sys, time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

os.environ['LITELLM_LOCAL_MODEL_COST_MAP'] = 'True'  # both sides offline: litellm's bundled model map
if __package__ in (None, ''): sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python bench/run.py`
from bench.simproc import start, STREAM, TOOLS

HERE = Path(__file__).resolve().parent
GPT, SONNET, KEY = 'openai/gpt-4o', 'anthropic/claude-sonnet-4-5', 'sk-bench'
SLEEP, NTOOLS = 0.2, 8

# Sizes, and repetitions (A/B pairs) per figure, of a full run and of `--quick`
FULL  = dict(n1=100, conc=256, n2=4, hist=800, n3=16, chunks=3000, n4=4, n5=6, n6=4)
QUICK = dict(n1=6,   conc=32,  n2=2, hist=100, n3=3,  chunks=300,  n4=2, n5=2, n6=1)

# ---------------------------------------------------------------- the machine

def machine()->dict:
    import litellm, importlib.metadata as md
    info = Path('/proc/cpuinfo').read_text().splitlines() if Path('/proc/cpuinfo').exists() else []
    def field(k): return next((l.split(':', 1)[1].strip() for l in info if l.startswith(k)), None)
    cpu = field('model name') or platform.processor()
    if field('cpu family'): cpu += f" (family {field('cpu family')}, model {field('model')})"
    return dict(cpu=cpu, cores=os.cpu_count(), python=platform.python_version(), implementation=platform.python_implementation(),
                os=platform.platform(), litellm=md.version('litellm'), lisette=md.version('lisette'), loadavg_start=os.getloadavg())

# ---------------------------------------------------------------- the cases: one raw litellm run and one lisette run each

@dataclass
class Case:
    fig: int
    name: str
    target: float
    reps: str                 # the config key of its number of A/B pairs
    raw: Callable             # raw litellm (a coroutine function, or a function if `sync`)
    lis: Callable             # lisette, doing the same requests
    prep: Callable = None     # untimed, before each lisette run (e.g. put a chat's history back)
    nreq: int = 0             # requests per run, for checking both sides sent the same bodies (0: don't check)
    sync: bool = False

def u(s): return {'role': 'user', 'content': s}

async def nap(i:int)->str:
    "Sleep a moment, then say so."
    await asyncio.sleep(SLEEP)
    return f'slept {i}'

def _sync_nap():
    def nap(i:int)->str:
        "Sleep a moment, then say so."
        time.sleep(SLEEP)
        return f'slept {i}'
    return nap

def history(n:int)->list:
    "`n` alternating user/assistant texts of a few sentences"
    return [f"{'Question' if i%2 == 0 else 'Answer'} {i}: " + 'the quick brown fox jumps over the lazy dog; ' * 6 for i in range(n)]

def cases(sim, cfg:dict, want=lambda fig: True)->list:
    import litellm
    from lisette import Chat
    from lisette.tools import lite_mk_func
    from lisette.asink import AsyncChat
    cs, o = [], sim.openai_base

    # 1. one non-streaming turn, a fresh chat each time; sync and async; OpenAI and Anthropic formats
    for model, tag, b in ((GPT, 'openai', o), (SONNET, 'anthropic', sim.anthropic_base)) if want(1) else ():
        def raw(model=model, b=b): return litellm.completion(model=model, messages=[u('Hi!')], api_base=b, api_key=KEY, temperature=0)
        def lis(model=model, b=b): return Chat(model, api_base=b, api_key=KEY)('Hi!')
        cs.append(Case(1, f'1 one turn, Chat ({tag}, sync)', 1.05, 'n1', raw, lis, nreq=1, sync=True))
    for model, tag, b in ((GPT, 'openai', o), (SONNET, 'anthropic', sim.anthropic_base)) if want(1) else ():
        async def raw(model=model, b=b): return await litellm.acompletion(model=model, messages=[u('Hi!')], api_base=b, api_key=KEY, temperature=0)
        async def lis(model=model, b=b): return await AsyncChat(model, api_base=b, api_key=KEY)('Hi!')
        cs.append(Case(1, f'1 one turn, AsyncChat ({tag})', 1.05, 'n1', raw, lis, nreq=1))

    # 2. many concurrent conversations: the wall time of the whole gather
    k = cfg['conc']
    async def raw(): await asyncio.gather(*[litellm.acompletion(model=GPT, messages=[u(f'Hi {i}!')], api_base=o, api_key=KEY,
                                                                temperature=0) for i in range(k)])
    async def lis(): await asyncio.gather(*[AsyncChat(GPT, api_base=o, api_key=KEY)(f'Hi {i}!') for i in range(k)])
    if want(2): cs.append(Case(2, f'2 {k} concurrent chats (gather)', 1.10, 'n2', raw, lis))

    # 3. a turn on a chat holding a long history (raw: the same messages)
    if want(3):
        chat = AsyncChat(GPT, api_base=o, api_key=KEY, hist=history(cfg['hist']))
        held = list(chat.hist)
        async def raw(): return await litellm.acompletion(model=GPT, messages=held + [u('And now?')], api_base=o, api_key=KEY, temperature=0)
        async def lis(): return await chat('And now?')
        def prep(): chat.hist[:] = held
        cs.append(Case(3, f"3 a turn on a {cfg['hist']}-message chat", 1.10, 'n3', raw, lis, prep, nreq=1))

    # 4. a long streamed reply consumed to the end, with the full response rebuilt
    smsg = f"{STREAM}{cfg['chunks']}"
    async def raw():
        res = await litellm.acompletion(model=GPT, messages=[u(smsg)], api_base=o, api_key=KEY, temperature=0,
                                        stream=True, stream_options={'include_usage': True})
        return litellm.stream_chunk_builder([c async for c in res])
    async def lis():
        async for last in await AsyncChat(GPT, api_base=o, api_key=KEY)(smsg, stream=True): pass
        return last
    if want(4): cs.append(Case(4, f"4 a {cfg['chunks']}-chunk stream + rebuild", 1.05, 'n4', raw, lis, nreq=1))

    # 5. one round of parallel tool calls. The floor, raw: the same two requests around one sleep, by hand
    tmsg, schema = f'{TOOLS}{NTOOLS}', lite_mk_func(nap)   # the very schema lisette sends (made untimed)
    async def raw():
        msgs, kw = [u(tmsg)], dict(model=GPT, api_base=o, api_key=KEY, temperature=0, tools=[schema])
        m = (await litellm.acompletion(messages=msgs, **kw)).choices[0].message
        await asyncio.gather(*[asyncio.sleep(SLEEP) for _ in m.tool_calls])
        msgs.append({'role': 'assistant', **({'content': m.content} if m.content else {}),   # no empty text: what lisette sends
                     'tool_calls': [tc.model_dump(exclude_none=True) for tc in m.tool_calls]})
        msgs += [{'role': 'tool', 'tool_call_id': tc.id, 'name': tc.function.name, 'content': f'slept {i}'} for i, tc in enumerate(m.tool_calls)]
        return await litellm.acompletion(messages=msgs, **kw)
    for kind, tool in (('async', nap), ('sync', _sync_nap())) if want(5) else ():
        async def lis(tool=tool): return await AsyncChat(GPT, api_base=o, api_key=KEY, tools=[tool])(tmsg)
        cs.append(Case(5, f'5 {NTOOLS} {kind} tools x {SLEEP}s, one round', 1.10, 'n5', raw, lis, nreq=2))
    return cs

# ---------------------------------------------------------------- A/B timing

def _orders(i, raw, lis): return (('raw', raw), ('lisette', lis)) if i % 2 == 0 else (('lisette', lis), ('raw', raw))

def _timed(S, C, k, t, c): S[k].append(time.perf_counter() - t); C[k].append(time.process_time() - c)

def _settle():
    "After the warm-up: the heap so far (imports, lazy ones too) is permanent, so the gc.collect() before each run is cheap"
    gc.collect(); gc.freeze()

async def ab(case:Case, n:int, warm:int=1):
    "Interleaved (ABBA) wall and client-CPU seconds of `n` raw and `n` lisette runs, after `warm` of each"
    prep = case.prep or (lambda: None)
    for _ in range(warm): await case.raw(); prep(); await case.lis()
    _settle()
    S, C = dict(raw=[], lisette=[]), dict(raw=[], lisette=[])
    for i in range(n):
        for k, f in _orders(i, case.raw, case.lis):
            if k == 'lisette': prep()
            gc.collect()
            t, c = time.perf_counter(), time.process_time()
            await f()
            _timed(S, C, k, t, c)
    return S, C

def ab_sync(case:Case, n:int, warm:int=1):
    "The same for sync functions, outside any event loop"
    for _ in range(warm): case.raw(); case.lis()
    _settle()
    S, C = dict(raw=[], lisette=[]), dict(raw=[], lisette=[])
    for i in range(n):
        for k, f in _orders(i, case.raw, case.lis):
            gc.collect()
            t, c = time.perf_counter(), time.process_time()
            f()
            _timed(S, C, k, t, c)
    return S, C

def same_requests(sim, nreq:int)->bool|None:
    "Did the warm-up's raw requests (the first `nreq`) and lisette's (the next `nreq`) send the same bodies?"
    if not nreq: return None
    bs = json.loads(re.sub(r'sim\d{4}', 'simN', json.dumps(sim.bodies())))   # tool call ids carry the request number
    return len(bs) >= 2*nreq and bs[:nreq] == bs[nreq:2*nreq]

def _stats(xs): return dict(median=statistics.median(xs), min=min(xs), max=max(xs), samples=xs)

def result(name, S, C, target, **extra)->dict:
    raw, lis = statistics.median(S['raw']), statistics.median(S['lisette'])
    craw, clis = (statistics.median(C['raw']), statistics.median(C['lisette'])) if C else (None, None)
    return dict(name=name, n=len(S['raw']), raw=_stats(S['raw']), lisette=_stats(S['lisette']), ratio=lis/raw, target=target,
                result='PASS' if lis/raw <= target else 'MISS', cpu_raw=craw, cpu_lisette=clis,
                cpu_ratio=clis/craw if craw else None, **extra)

def run_cases(sim, cfg, cs, log):
    "Sync cases first, then the async ones, all in one event loop (litellm caches its async clients per loop)"
    def done(c, S, C): log(result(c.name, S, C, c.target, fig=c.fig, same_request=same_requests(sim, c.nreq))); sim.reset()
    for c in cs:
        if c.sync: sim.reset(); done(c, *ab_sync(c, cfg[c.reps]))
    async def go():
        for c in cs:
            if not c.sync: sim.reset(); done(c, *await ab(c, cfg[c.reps]))
    asyncio.run(go())

# 6. import time, in fresh processes
_IMP_RAW = ("import json,time;t=time.perf_counter();c=time.process_time();import litellm;"
            "print(json.dumps([time.perf_counter()-t,time.process_time()-c]))")
# lisette.core begins with the env default and `import litellm`: importing litellm first is the same work, and it
# splits lisette's own share out (the third number)
_IMP_LIS = ("import json,time;t=time.perf_counter();c=time.process_time();import litellm;t1=time.perf_counter();"
            "import lisette.asink;t2=time.perf_counter();print(json.dumps([t2-t,time.process_time()-c,t2-t1]))")

def import_figure(cfg, log, ab:bool=True):
    "Fresh processes, interleaved (if `ab`); and, in each lisette process, its litellm part against the whole"
    env = os.environ | {'LITELLM_LOCAL_MODEL_COST_MAP': 'True'}
    def child(code): return json.loads(subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                                                      check=True, cwd=HERE.parent).stdout.strip().splitlines()[-1])
    S, C, split = dict(raw=[], lisette=[]), dict(raw=[], lisette=[]), dict(raw=[], lisette=[])
    for i in range(cfg['n6']):
        for k, code in _orders(i, _IMP_RAW, _IMP_LIS) if ab else [('lisette', _IMP_LIS)]:
            r = child(code)
            S[k].append(r[0]); C[k].append(r[1])
            if k == 'lisette': split['raw'].append(r[0] - r[2]); split['lisette'].append(r[0])
    if ab: log(result('6 import lisette.asink vs litellm', S, C, 1.05, fig=6))
    own = statistics.median([t - l for t, l in zip(split['lisette'], split['raw'])])
    log(result('6 import, split in the lisette process', split, None, 1.05, fig=6, lisette_own_ms=own*1e3))

# ---------------------------------------------------------------- the table

HEADER = f"{'figure':<40} {'n':>3} {'raw ms':>9} {'lisette ms':>10} {'ratio':>6}  {'target':<6}  {'':<4}  {'cpu rt':>6} {'secs':>5}"

def fmt_row(r)->str:
    cpu = f"{r['cpu_ratio']:.3f}" if r.get('cpu_ratio') else '-'
    note = '  (request bodies differ!)' if r.get('same_request') is False else ''
    if 'lisette_own_ms' in r: note = f"  (lisette's own: {r['lisette_own_ms']:.0f} ms)"
    return (f"{r['name']:<40} {r['n']:>3} {r['raw']['median']*1e3:>9.1f} {r['lisette']['median']*1e3:>10.1f} {r['ratio']:>6.3f}  "
            f"<={r['target']:.2f}  {r['result']:<4}  {cpu:>6} {r['seconds']:>5.1f}{note}")

def main(argv=None):
    ap = argparse.ArgumentParser(prog='python -m bench', description=__doc__)
    ap.add_argument('--quick', action='store_true', help='smoke mode: few repetitions, small sizes (< 20 s)')
    ap.add_argument('--only', default='', help='figure numbers to run, e.g. 1,4 (default: all)')
    ap.add_argument('--inproc', action='store_true', help="run the simulator in this process (its threads then share the GIL)")
    ap.add_argument('--out', default=None, help='the JSON file (default: bench/results.json, or results-quick.json)')
    a = ap.parse_args(argv)
    cfg, only = (QUICK if a.quick else FULL), {int(x) for x in a.only.split(',') if x.strip()}
    def want(f): return not only or f in only
    t0 = time.perf_counter()
    m = machine()
    print(f"lisette {m['lisette']} vs litellm {m['litellm']} | {m['cpu']}, {m['cores']} cores | {m['implementation']} {m['python']} | "
          f"sim: {'in-process' if a.inproc else 'own process'} | {'quick' if a.quick else 'full'} | load avg {m['loadavg_start'][0]:.2f}",
          flush=True)
    print(HEADER + '\n' + '-'*len(HEADER), flush=True)
    out, tick = [], [time.perf_counter()]
    def log(r):
        now = time.perf_counter()
        r['seconds'], tick[0] = now - tick[0], now   # how long the figure took, warm-up included
        out.append(r)
        print(fmt_row(r), flush=True)
    if any(want(f) for f in (1, 2, 3, 4, 5)):
        with start(a.inproc) as sim:
            cs = cases(sim, cfg, want)
            tick[0] = time.perf_counter()
            run_cases(sim, cfg, cs, log)
    if want(6): import_figure(cfg, log, ab=not a.quick)
    m['loadavg_end'], secs = os.getloadavg(), time.perf_counter() - t0
    misses = [r for r in out if r['result'] == 'MISS']
    print('-'*len(HEADER))
    print("ratio: lisette / raw litellm, medians of interleaved runs, wall time; cpu rt: the same for this process's CPU time")
    print(f"{len(out)-len(misses)} PASS, {len(misses)} MISS (informational) | {secs:.1f} s | load avg {m['loadavg_end'][0]:.2f} at the end")
    path = Path(a.out) if a.out else HERE / ('results-quick.json' if a.quick else 'results.json')
    path.write_text(json.dumps(dict(machine=m, mode='quick' if a.quick else 'full', sim='in-process' if a.inproc else 'process',
                                    config=cfg, seconds=secs, figures=out), indent=1))
    print(f'wrote {path}')
    return 0

if __name__ == '__main__': sys.exit(main())
