"""lisette against raw litellm, on the same requests to the same simulator: each figure is lisette's time over
litellm's (medians of interleaved A/B runs). `python -m bench [--quick] [--inproc] [--out PATH]`."""
import argparse, asyncio, gc, json, os, platform, re, statistics, subprocess, sys, time
from pathlib import Path

os.environ['LITELLM_LOCAL_MODEL_COST_MAP'] = 'True'  # both sides offline: litellm's bundled model map
if __package__ in (None, ''): sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python bench/run.py`
from bench.simproc import start, STREAM, TOOLS

HERE = Path(__file__).resolve().parent
GPT, SONNET, KEY = 'openai/gpt-4o', 'anthropic/claude-sonnet-4-5', 'sk-bench'
SLEEP, NTOOLS = 0.2, 8

# The sizes and repetitions (A/B pairs) of a full run and of `--quick`
FULL  = dict(n1=100, conc=256, n2=4, hist=800, n3=16, chunks=3000, n4=4, n5=6, n6=3)
QUICK = dict(n1=6,  conc=32,  n2=2, hist=100, n3=3,  chunks=300,  n4=2, n5=2, n6=1)

# ---------------------------------------------------------------- the machine

def machine()->dict:
    import litellm, importlib.metadata as md
    cpu = next((l.split(':', 1)[1].strip() for l in Path('/proc/cpuinfo').read_text().splitlines()
                if l.startswith('model name')), platform.processor()) if Path('/proc/cpuinfo').exists() else platform.processor()
    return dict(cpu=cpu, cores=os.cpu_count(), python=platform.python_version(), implementation=platform.python_implementation(),
                os=platform.platform(), litellm=md.version('litellm'), lisette=md.version('lisette'),
                loadavg_start=os.getloadavg())

# ---------------------------------------------------------------- A/B timing

def _stats(xs): return dict(median=statistics.median(xs), min=min(xs), max=max(xs), samples=xs)

def _result(name, S, C, target, **extra)->dict:
    raw, lis = statistics.median(S['raw']), statistics.median(S['lisette'])
    craw, clis = (statistics.median(C['raw']), statistics.median(C['lisette'])) if C else (None, None)
    r = lis / raw
    return dict(name=name, n=len(S['raw']), raw=_stats(S['raw']), lisette=_stats(S['lisette']), ratio=r, target=target,
                result='PASS' if r <= target else 'MISS', cpu_raw=craw, cpu_lisette=clis,
                cpu_ratio=clis / craw if craw else None, **extra)

def _orders(i, raw, lis): return (('raw', raw), ('lisette', lis)) if i % 2 == 0 else (('lisette', lis), ('raw', raw))

async def ab_async(raw, lis, n, warm=1, prep=None):
    "Interleaved A/B (ABBA) timings of two coroutine functions: wall and client CPU seconds per run"
    prep = prep or (lambda: None)
    for _ in range(warm): await raw(); prep(); await lis()
    gc.collect(); gc.freeze()   # what the warm-up imported lazily is permanent too: gc.collect() per run stays cheap
    S, C = dict(raw=[], lisette=[]), dict(raw=[], lisette=[])
    for i in range(n):
        for k, f in _orders(i, raw, lis):
            if k == 'lisette': prep()   # untimed: e.g. put a chat's history back as it was
            gc.collect()
            t, c = time.perf_counter(), time.process_time()
            await f()
            S[k].append(time.perf_counter() - t); C[k].append(time.process_time() - c)
    return S, C

def ab_sync(raw, lis, n, warm=1):
    for _ in range(warm): raw(); lis()
    gc.collect(); gc.freeze()
    S, C = dict(raw=[], lisette=[]), dict(raw=[], lisette=[])
    for i in range(n):
        for k, f in _orders(i, raw, lis):
            gc.collect()
            t, c = time.perf_counter(), time.process_time()
            f()
            S[k].append(time.perf_counter() - t); C[k].append(time.process_time() - c)
    return S, C

def same_requests(sim, nreq:int)->bool:
    "Did the warm-up's raw requests (first `nreq`) and lisette's (next `nreq`) send the same bodies?"
    bs = json.loads(re.sub(r'sim\d{4}', 'simN', json.dumps(sim.bodies())))
    return len(bs) >= 2*nreq and bs[:nreq] == bs[nreq:2*nreq]

# ---------------------------------------------------------------- the figures

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
    "`n` alternating user/assistant texts, a few sentences each"
    return [f"{'Question' if i%2 == 0 else 'Answer'} {i}: " + 'the quick brown fox jumps over the lazy dog; ' * 6
            for i in range(n)]

async def async_figures(sim, cfg, out:list, log, want):
    for f, fig in ((1, fig1), (2, fig2), (3, fig3), (4, fig4), (5, fig5)):
        if want(f): await fig(sim, cfg, out, log)
        sim.reset()

async def fig1(sim, cfg, out, log):
    "One non-streaming turn, a fresh chat each time"
    import litellm
    from lisette.asink import AsyncChat
    for model, tag, b in ((GPT, 'openai', sim.openai_base), (SONNET, 'anthropic', sim.anthropic_base)):
        async def raw(): return await litellm.acompletion(model=model, messages=[u('Hi!')], api_base=b, api_key=KEY, temperature=0)
        async def lis(): return await AsyncChat(model, api_base=b, api_key=KEY)('Hi!')
        sim.reset()
        S, C = await ab_async(raw, lis, cfg['n1'])
        out.append(_result(f'1 one turn, AsyncChat ({tag})', S, C, 1.05, fig=1, same_request=same_requests(sim, 1))); log(out[-1])

async def fig2(sim, cfg, out, log):
    "Many concurrent conversations, wall time of the whole gather"
    import litellm
    from lisette.asink import AsyncChat
    k = cfg['conc']
    async def raw(): await asyncio.gather(*[litellm.acompletion(model=GPT, messages=[u(f'Hi {i}!')], api_base=sim.openai_base,
                                                                api_key=KEY, temperature=0) for i in range(k)])
    async def lis(): await asyncio.gather(*[AsyncChat(GPT, api_base=sim.openai_base, api_key=KEY)(f'Hi {i}!') for i in range(k)])
    sim.reset()
    S, C = await ab_async(raw, lis, cfg['n2'])
    out.append(_result(f'2 {k} concurrent chats (gather)', S, C, 1.10, fig=2)); log(out[-1])

async def fig3(sim, cfg, out, log):
    "A turn on a chat that holds a long history"
    import litellm
    from lisette.asink import AsyncChat
    h = history(cfg['hist'])
    chat = AsyncChat(GPT, api_base=sim.openai_base, api_key=KEY, hist=h)
    held = list(chat.hist)
    async def raw(): return await litellm.acompletion(model=GPT, messages=held + [u('And now?')], api_base=sim.openai_base,
                                                      api_key=KEY, temperature=0)
    async def lis(): return await chat('And now?')
    def prep(): chat.hist[:] = held   # the same history every time
    sim.reset()
    S, C = await ab_async(raw, lis, cfg['n3'], prep=prep)
    out.append(_result(f"3 a turn on a {cfg['hist']}-message chat", S, C, 1.10, fig=3, same_request=same_requests(sim, 1))); log(out[-1])

async def fig4(sim, cfg, out, log):
    "A long streamed reply, consumed to the end, with the full response rebuilt"
    import litellm
    from lisette.asink import AsyncChat
    msg = f"{STREAM}{cfg['chunks']}"
    async def raw():
        res = await litellm.acompletion(model=GPT, messages=[u(msg)], api_base=sim.openai_base, api_key=KEY, temperature=0,
                                        stream=True, stream_options={'include_usage': True})
        chunks = [c async for c in res]
        return litellm.stream_chunk_builder(chunks)
    async def lis():
        last = None
        async for o in await AsyncChat(GPT, api_base=sim.openai_base, api_key=KEY)(msg, stream=True): last = o
        return last
    sim.reset()
    S, C = await ab_async(raw, lis, cfg['n4'])
    out.append(_result(f"4 a {cfg['chunks']}-chunk stream + rebuild", S, C, 1.05, fig=4, same_request=same_requests(sim, 1))); log(out[-1])

async def fig5(sim, cfg, out, log):
    "One round of parallel tool calls; the floor is the same two requests and one sleep, by hand with litellm"
    import litellm
    from lisette.asink import AsyncChat
    from lisette.core import lite_mk_func
    msg, schema = f'{TOOLS}{NTOOLS}', lite_mk_func(nap)   # the very schema lisette sends (untimed)
    async def raw():
        msgs = [u(msg)]
        kw = dict(model=GPT, api_base=sim.openai_base, api_key=KEY, temperature=0, tools=[schema])
        m = (await litellm.acompletion(messages=msgs, **kw)).choices[0].message
        await asyncio.gather(*[asyncio.sleep(SLEEP) for _ in m.tool_calls])
        msgs += [{'role': 'assistant', 'content': m.content or '', 'tool_calls': [tc.model_dump(exclude_none=True) for tc in m.tool_calls]}]
        msgs += [{'role': 'tool', 'tool_call_id': tc.id, 'name': tc.function.name, 'content': f'slept {i}'}
                 for i, tc in enumerate(m.tool_calls)]
        return await litellm.acompletion(messages=msgs, **kw)
    for kind, tool in (('async', nap), ('sync', _sync_nap())):
        async def lis(): return await AsyncChat(GPT, api_base=sim.openai_base, api_key=KEY, tools=[tool])(msg)
        sim.reset()
        S, C = await ab_async(raw, lis, cfg['n5'])
        out.append(_result(f'5 {NTOOLS} {kind} tools x {SLEEP}s, one round', S, C, 1.10, fig=5,
                           same_request=same_requests(sim, 2))); log(out[-1])

def sync_figures(sim, cfg, out:list, log):
    import litellm
    from lisette.core import Chat
    for model, tag, b in ((GPT, 'openai', sim.openai_base), (SONNET, 'anthropic', sim.anthropic_base)):
        def raw(): return litellm.completion(model=model, messages=[u('Hi!')], api_base=b, api_key=KEY, temperature=0)
        def lis(): return Chat(model, api_base=b, api_key=KEY)('Hi!')
        sim.reset()
        S, C = ab_sync(raw, lis, cfg['n1'])
        out.append(_result(f'1 one turn, Chat ({tag}, sync)', S, C, 1.05, fig=1, same_request=same_requests(sim, 1))); log(out[-1])
    sim.reset()

# 6. import time, in fresh processes
_IMP_RAW = "import json,time;t=time.perf_counter();c=time.process_time();import litellm;print(json.dumps([time.perf_counter()-t,time.process_time()-c]))"
# lisette.core's first statements are the env default and `import litellm`: importing litellm first is the same work,
# and splits out lisette's own share (the third number)
_IMP_LIS = ("import json,time;t=time.perf_counter();c=time.process_time();import litellm;t1=time.perf_counter();import lisette.asink;"
            "t2=time.perf_counter();print(json.dumps([t2-t,time.process_time()-c,t2-t1]))")

def import_figure(cfg, out:list, log, ab:bool=True):
    "Fresh processes, interleaved (`ab`); and in each lisette process, the litellm part against the whole"
    env = os.environ | {'LITELLM_LOCAL_MODEL_COST_MAP': 'True'}
    def child(code): return json.loads(subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                                                      check=True, cwd=HERE.parent).stdout.strip().splitlines()[-1])
    S, C, split = dict(raw=[], lisette=[]), dict(raw=[], lisette=[]), dict(raw=[], lisette=[])
    for i in range(cfg['n6']):
        for k, code in _orders(i, _IMP_RAW, _IMP_LIS) if ab else [('lisette', _IMP_LIS)]:
            r = child(code)
            S[k].append(r[0]); C[k].append(r[1])
            if k == 'lisette': split['raw'].append(r[0] - r[2]); split['lisette'].append(r[0])
    if ab: out.append(_result('6 import lisette.asink vs litellm', S, C, 1.05, fig=6)); log(out[-1])
    own = statistics.median([t - l for t, l in zip(split['lisette'], split['raw'])])
    out.append(_result('6 import, split in the lisette process', split, None, 1.05, fig=6, lisette_own_ms=own*1e3)); log(out[-1])

# ---------------------------------------------------------------- the table

def fmt_row(r)->str:
    same = '' if r.get('same_request', True) else '  (request bodies differ!)'
    cpu = f"{r['cpu_ratio']:.3f}" if r.get('cpu_ratio') else '  -  '
    return (f"{r['name']:<40} {r['n']:>3} {r['raw']['median']*1e3:>10.1f} {r['lisette']['median']*1e3:>11.1f} "
            f"{r['ratio']:>7.3f}  <={r['target']:.2f}  {r['result']:<4}  {cpu:>7} {r['seconds']:>6.1f}{same}")

HEADER = f"{'figure':<40} {'n':>3} {'raw ms':>10} {'lisette ms':>11} {'ratio':>7}  {'target':<6}  {'':<4}  {'cpu rt':>7} {'secs':>6}"

def main(argv=None):
    ap = argparse.ArgumentParser(prog='python -m bench', description=__doc__)
    ap.add_argument('--quick', action='store_true', help='smoke mode: few repetitions, small sizes (< 20 s)')
    ap.add_argument('--inproc', action='store_true', help='run the simulator in this process (its threads share our GIL)')
    ap.add_argument('--only', default='', help='comma-separated figure numbers to run, e.g. 1,4 (default: all)')
    ap.add_argument('--out', default=None, help='the JSON file (default: bench/results.json, or results-quick.json with --quick)')
    a = ap.parse_args(argv)
    cfg, only = (QUICK if a.quick else FULL), {int(x) for x in a.only.split(',') if x.strip()}
    want = lambda f: not only or f in only
    t0 = time.perf_counter()
    m = machine()
    print(f"lisette {m['lisette']} vs litellm {m['litellm']} | {m['cpu']}, {m['cores']} cores | {m['implementation']} {m['python']} | "
          f"sim: {'in-process' if a.inproc else 'separate process'} | {'quick' if a.quick else 'full'} | "
          f"load avg {m['loadavg_start'][0]:.2f}", flush=True)
    print(HEADER + '\n' + '-'*len(HEADER), flush=True)
    import lisette.asink, lisette.core   # noqa: F401 (everything imported before the freeze)
    gc.collect(); gc.freeze()   # the imported heap is permanent: the per-run gc.collect() is then cheap for both sides
    out, tick = [], [time.perf_counter()]
    def log(r):
        now = time.perf_counter()
        r['seconds'], tick[0] = now - tick[0], now   # how long the figure took, warm-up included
        print(fmt_row(r), flush=True)
    with start(a.inproc) as sim:
        if want(1): sync_figures(sim, cfg, out, log)
        if any(want(f) for f in (1, 2, 3, 4, 5)): asyncio.run(async_figures(sim, cfg, out, log, want))
    if want(6): import_figure(cfg, out, log, ab=not a.quick)
    m['loadavg_end'], secs = os.getloadavg(), time.perf_counter() - t0
    print('-'*len(HEADER))
    print("ratio: lisette / raw litellm, medians of interleaved runs (wall); cpu rt: the same for the client's CPU time "
          "(process_time)")
    misses = [r['name'] for r in out if r['result'] == 'MISS']
    print(f"{len(out)-len(misses)} PASS, {len(misses)} MISS | {secs:.1f} s | load avg {m['loadavg_end'][0]:.2f} at the end")
    path = Path(a.out) if a.out else HERE / ('results-quick.json' if a.quick else 'results.json')
    path.write_text(json.dumps(dict(machine=m, mode='quick' if a.quick else 'full', sim='in-process' if a.inproc else 'process',
                                    config=cfg, seconds=secs, figures=out), indent=1))
    print(f"wrote {path}")
    return 0

if __name__ == '__main__': sys.exit(main())
