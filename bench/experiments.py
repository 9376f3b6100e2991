"""Proposed fixes to lisette, tried by monkeypatching (bench-only: lisette/ is not touched). Each experiment runs raw
litellm, lisette as it is, and lisette with the fix(es), interleaved, on the same simulator; it prints medians of wall
and client-CPU time and their ratios to raw. `python -m bench.experiments [--only 1,3] [-n 10]`"""
import argparse, asyncio, copy, functools, gc, json, queue, statistics, sys, threading, time, weakref
from contextlib import contextmanager
from pathlib import Path

if __package__ in (None, ''): sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.run import GPT, SONNET, KEY, NTOOLS, TOOLS, FULL, cases, u, machine
from bench.simproc import start

# ---------------------------------------------------------------- the fixes, as patches

def _cached_schemas():
    "Fix 1: `lite_mk_func` made once per function (fastcore's `get_schema` reads and tokenizes the source each time)"
    import lisette.core as core
    orig, memo = core.lite_mk_func, weakref.WeakKeyDictionary()
    def lite_mk_func(f):
        try: s = memo[f]
        except (KeyError, TypeError):
            s = orig(f)
            try: memo[f] = s
            except TypeError: pass   # dicts, bound methods, ...: not cached
        return s if isinstance(f, dict) else copy.deepcopy(s)   # a copy: litellm may adjust the tools it is given
    return [(core, 'lite_mk_func', lite_mk_func)]

class _DaemonPool:
    "Fix 2: daemon worker threads that wait for work, so a sync tool call costs a queue put, not a thread start"
    def __init__(self, idle_exit=60.0): self.q, self.idle, self.lock, self.idle_exit = queue.SimpleQueue(), 0, threading.Lock(), idle_exit
    def submit(self, fn):
        with self.lock:
            if self.idle: self.idle -= 1   # an idle worker will take it (a hung tool's worker is never counted idle)
            else: threading.Thread(target=self._work, daemon=True).start()
        self.q.put(fn)
    def _work(self):
        while True:
            try: fn = self.q.get(timeout=self.idle_exit)
            except queue.Empty:
                with self.lock:
                    if self.idle: self.idle -= 1; return   # else a job was handed to us just now: take it
                continue
            try: fn()
            finally:
                with self.lock: self.idle += 1

def _pooled_threads():
    import lisette.asink as asink
    pool = _DaemonPool()
    def _in_thread(f, *args):
        "A future for `f(*args)` run on a pooled daemon thread"
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        def settle(ok, v):
            if not fut.done(): (fut.set_result if ok else fut.set_exception)(v)
        def run():
            try: res = (True, f(*args))
            except BaseException as e: res = (False, e)
            loop.call_soon_threadsafe(settle, *res)
        pool.submit(run)
        return fut
    return [(asink, '_in_thread', _in_thread)]

def _cached_support():
    "Fix 3: `supports_reasoning` (litellm's get_supported_openai_params, ~140 us for Anthropic) looked up once per model"
    import lisette.core as core
    return [(core, 'supports_reasoning', functools.lru_cache(maxsize=256)(core.supports_reasoning))]

@contextmanager
def patched(patches):
    old = [(m, k, getattr(m, k)) for m, k, _ in patches]
    for m, k, v in patches: setattr(m, k, v)
    try: yield
    finally:
        for m, k, v in old: setattr(m, k, v)

# ---------------------------------------------------------------- interleaved runs of several variants

async def compare(variants, n, warm=1):
    "variants: [(label, coroutine fn, patches)]; interleaved (rotating order) wall and CPU seconds"
    async def one(f, ps):
        with patched(ps): return await f()
    for _ in range(warm):
        for _, f, ps in variants: await one(f, ps)
    gc.collect(); gc.freeze()
    S, C = {v[0]: [] for v in variants}, {v[0]: [] for v in variants}
    for i in range(n):
        for label, f, ps in variants[i % len(variants):] + variants[:i % len(variants)]:
            with patched(ps):
                gc.collect()
                t, c = time.perf_counter(), time.process_time()
                await f()
                S[label].append(time.perf_counter() - t); C[label].append(time.process_time() - c)
    return S, C

def show(title, S, C):
    med = {k: (statistics.median(S[k]), statistics.median(C[k])) for k in S}
    rw, rc = med['raw']
    print(f"\n{title}\n{'variant':<34} {'wall ms':>9} {'/raw':>6} {'cpu ms':>8} {'/raw':>6}")
    for k, (w, c) in med.items(): print(f"{k:<34} {w*1e3:9.2f} {w/rw:6.3f} {c*1e3:8.2f} {c/rc:6.3f}")
    return {k: dict(wall=w, cpu=c, wall_ratio=w/rw, cpu_ratio=c/rc, wall_samples=S[k], cpu_samples=C[k]) for k, (w, c) in med.items()}

async def experiments(sim, n, want):
    import litellm
    from lisette.core import lite_mk_func
    from lisette.asink import AsyncChat
    o, out = sim.openai_base, {}
    f5 = {c.name: c for c in cases(sim, FULL, lambda f: f == 5)}
    fix1, fix2, fix3 = _cached_schemas(), _pooled_threads(), _cached_support()

    if want(1):   # fig 5, async tools: the chat's construction makes the tool schema from source, each time
        c = next(c for k, c in f5.items() if 'async' in k)
        S, C = await compare([('raw', c.raw, []), ('lisette', c.lis, []), ('lisette + fix 1 (schemas)', c.lis, fix1)], n)
        out['fig5_async'] = show(f'[1] {c.name}', S, C)

    if want(2):   # fig 5, sync tools: also a thread started per call
        c = next(c for k, c in f5.items() if ' sync' in k)
        S, C = await compare([('raw', c.raw, []), ('lisette', c.lis, []), ('lisette + fix 1', c.lis, fix1),
                              ('lisette + fix 1 + fix 2 (pool)', c.lis, fix1 + fix2)], n)
        out['fig5_sync'] = show(f'[2] {c.name}', S, C)

    if want(3):   # a realistic chat: 8 tools registered, one plain turn, a fresh chat each time
        def mk(i):
            def f(x:int)->int:
                "Return x."
                return x
            f.__name__ = f'tool{i}'
            return f
        tools = [mk(i) for i in range(NTOOLS)]
        schemas = [lite_mk_func(t) for t in tools]
        async def raw(): return await litellm.acompletion(model=GPT, messages=[u('Hi!')], tools=schemas, api_base=o, api_key=KEY, temperature=0)
        async def lis(): return await AsyncChat(GPT, api_base=o, api_key=KEY, tools=tools)('Hi!')
        S, C = await compare([('raw', raw, []), ('lisette', lis, []), ('lisette + fix 1 (schemas)', lis, fix1)], n*4)
        out['turn_8_tools'] = show(f'[3] one turn, AsyncChat with {NTOOLS} tools registered (openai, fresh chat)', S, C)

    if want(4):   # think= on every turn: a litellm capability lookup per call
        b = sim.anthropic_base
        async def raw(): return await litellm.acompletion(model=SONNET, messages=[u('Hi!')], reasoning_effort='low', api_base=b, api_key=KEY)
        chat = AsyncChat(SONNET, api_base=b, api_key=KEY)
        async def lis():
            chat.hist.clear()
            return await chat('Hi!', think='l')
        S, C = await compare([('raw', raw, []), ('lisette', lis, []), ('lisette + fix 3 (cached lookup)', lis, fix3)], n*4)
        out['think_turn'] = show("[4] one turn with think='l' (anthropic)", S, C)
    return out

def main(argv=None):
    ap = argparse.ArgumentParser(prog='python -m bench.experiments', description=__doc__)
    ap.add_argument('-n', type=int, default=10, help='runs per variant (x4 for the short experiments 3 and 4)')
    ap.add_argument('--only', default='')
    ap.add_argument('--out', default=str(Path(__file__).resolve().parent / 'results-experiments.json'))
    a = ap.parse_args(argv)
    only = {int(x) for x in a.only.split(',') if x.strip()}
    m = machine()
    print(f"lisette {m['lisette']} vs litellm {m['litellm']} | {m['cpu']}, {m['cores']} cores | Python {m['python']} | "
          f"load avg {m['loadavg_start'][0]:.2f}")
    with start() as sim: out = asyncio.run(experiments(sim, a.n, lambda k: not only or k in only))
    Path(a.out).write_text(json.dumps(dict(machine=m, experiments=out), indent=1))
    print(f'\nwrote {a.out}')

if __name__ == '__main__': main()
