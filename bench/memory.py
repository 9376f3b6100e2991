"""The heap a conversation leaves behind: lisette against raw litellm, the same requests to the same simulator.
Each conversation is a streamed tool round (the streamed request, the tool, the streamed request carrying its result),
half of them Anthropic, half OpenAI, all of a batch at once. `python -m bench.memory [--quick] [--out PATH]`"""
import argparse, asyncio, ctypes, gc, json, os, re, statistics, sys, tempfile, time
from pathlib import Path

os.environ['LITELLM_LOCAL_MODEL_COST_MAP'] = 'True'  # both sides offline: litellm's bundled model map
if __package__ in (None, ''): sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python bench/memory.py`
from bench.simproc import start, TOOLS, TEXT

HERE = Path(__file__).resolve().parent
GPT, SONNET, KEY = 'openai/gpt-4o', 'anthropic/claude-sonnet-4-5', 'sk-bench'
MSG = f'{TOOLS}1'   # the simulator asks for one call of `nap`, then answers the result with `TEXT`

# conversations a batch, in the warm-up batch (as many: it opens as many connections), and measured batches a side
FULL  = dict(batch=300, warm=300, reps=3)
QUICK = dict(batch=50,  warm=50,  reps=2)

# ---------------------------------------------------------------- the heap

class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ('arena', 'ordblks', 'smblks', 'hblks', 'hblkhd', 'usmblks', 'fsmblks',
                                                'uordblks', 'fordblks', 'keepcost')]

def _pymalloc_bytes()->int:
    "Bytes in pymalloc's allocated blocks, from `sys._debugmallocstats` (which writes to fd 2)"
    with tempfile.TemporaryFile() as f:
        sys.stderr.flush()
        saved = os.dup(2); os.dup2(f.fileno(), 2)
        try: sys._debugmallocstats()
        finally: os.dup2(saved, 2); os.close(saved)
        f.seek(0)
        return int(re.search(rb'# bytes in allocated blocks\s*=\s*([\d,]+)', f.read()).group(1).replace(b',', b''))

def _mallinfo2():
    "glibc's `mallinfo2` (glibc >= 2.33), or None"
    try: f = ctypes.CDLL('libc.so.6').mallinfo2
    except (OSError, AttributeError): return None
    f.restype = _MallInfo2
    return f

def heap_in_use()->int:
    """Bytes the process's heap has in use after a full collection: glibc malloc's in-use bytes plus pymalloc's
    allocated blocks. Unlike RSS it doesn't count memory freed but kept by the allocators, so it is steady enough to
    measure a few hundred bytes per conversation. Without glibc, the resident set size (much noisier)."""
    gc.collect()
    mi = _mallinfo2()
    if mi is None: return int(Path('/proc/self/statm').read_text().split()[1]) * os.sysconf('SC_PAGE_SIZE')
    mi = mi()
    return mi.uordblks + mi.hblkhd + _pymalloc_bytes()

NAMES = {'Turn', 'Chat', 'AsyncChat', 'Stream', 'AStream', 'ModelResponse', 'ModelResponseStream'}

def live_objects()->int:
    """How many chats, turns, streams and responses are alive. By exact type: `isinstance` with pydantic's models
    (ABCs) over every object would fill the ABCs' caches, and that would show as heap growth"""
    return sum(type(o).__name__ in NAMES and type(o).__module__.startswith(('lisette', 'litellm')) for o in gc.get_objects())

# ---------------------------------------------------------------- one batch of conversations, each side

def models(n:int)->list: return [SONNET, GPT] * (n // 2)

def conversations(sim):
    "(raw, lisette): coroutine functions that hold `n` conversations at once and return their final texts"
    import litellm
    from lisette import AsyncChat
    from lisette.tools import lite_mk_func
    async def nap(i:int # which call
                 )->str:
        "Say which call this was."
        return f'slept {i}'
    schema = lite_mk_func(nap)   # the very schema lisette sends
    def api_base(model): return sim.anthropic_base if model == SONNET else sim.openai_base

    async def streamed(msgs, model):
        res = await litellm.acompletion(model=model, messages=msgs, api_base=api_base(model), api_key=KEY, temperature=0,
                                        tools=[schema], stream=True, stream_options={'include_usage': True})
        return litellm.stream_chunk_builder([c async for c in res], messages=msgs).choices[0].message
    async def raw_one(model):
        msgs = [{'role': 'user', 'content': MSG}]
        m = await streamed(msgs, model)
        msgs.append({'role': 'assistant', 'tool_calls': [tc.model_dump(exclude_none=True) for tc in m.tool_calls]}
                    | ({'content': m.content} if m.content else {}))   # as lisette sends it: no empty text
        msgs += [{'role': 'tool', 'tool_call_id': tc.id, 'name': tc.function.name, 'content': await nap(**json.loads(tc.function.arguments))}
                 for tc in m.tool_calls]
        return (await streamed(msgs, model)).content
    async def lis_one(model):
        async for last in await AsyncChat(model, api_base=api_base(model), api_key=KEY, tools=[nap])(MSG, stream=True): pass
        return last.choices[0].message.content
    async def raw(n): return await asyncio.gather(*[raw_one(m) for m in models(n)])
    async def lis(n): return await asyncio.gather(*[lis_one(m) for m in models(n)])
    return raw, lis

def same_requests(bodies:list, n:int)->bool:
    "Did the raw warm-up batch (`n` conversations, the first `2n` bodies) send the same bodies as lisette's (the next `2n`)?"
    bs = [json.dumps(b, sort_keys=True) for b in json.loads(re.sub(r'sim\d{4}', 'simN', json.dumps(bodies)))]  # ids carry the request number
    return len(bs) == 4*n and sorted(bs[:2*n]) == sorted(bs[2*n:])

async def measure(sim, cfg, log):
    raw, lis = conversations(sim)
    sides = dict(raw=raw, lisette=lis)
    for k, f in sides.items():   # warm-up: connection pools, lazy imports, litellm's caches
        texts = await f(cfg['warm'])
        assert texts == [TEXT] * len(texts), (k, set(texts))
    same = same_requests(sim.bodies(), cfg['warm'])
    sim.reset()
    await asyncio.sleep(0.5)
    n, R = cfg['batch'], {k: dict(growth=[], secs=[], left=[]) for k in sides}
    gc.collect()
    objs0 = live_objects()
    for i in range(cfg['reps']):
        for k in (('raw', 'lisette') if i % 2 == 0 else ('lisette', 'raw')):   # ABBA
            m0, t = heap_in_use(), time.perf_counter()
            texts = await sides[k](n)
            secs = time.perf_counter() - t
            assert texts == [TEXT] * n, (k, set(texts))
            del texts
            await asyncio.sleep(0.5)   # let litellm's background work for the batch (logging, connection release) finish
            R[k]['growth'].append((heap_in_use() - m0) / n); R[k]['secs'].append(secs); R[k]['left'].append(live_objects() - objs0)
            log(f"  batch {i+1} {k:<8} {secs:6.1f} s   heap {R[k]['growth'][-1]:+8,.0f} B a conversation   "
                f"objects left {R[k]['left'][-1]:+d}")
    return R, same

# ---------------------------------------------------------------- main

def main(argv=None):
    ap = argparse.ArgumentParser(prog='python -m bench.memory', description=__doc__)
    ap.add_argument('--quick', action='store_true', help='smoke mode: smaller batches, fewer of them')
    ap.add_argument('--out', default=None, help='the JSON file (default: bench/memory.json, or memory-quick.json)')
    a = ap.parse_args(argv)
    cfg, t0 = (QUICK if a.quick else FULL), time.perf_counter()
    from bench.run import machine
    m = machine()
    print(f"lisette {m['lisette']} vs litellm {m['litellm']} | {m['implementation']} {m['python']} | sim: own process | "
          f"{'quick' if a.quick else 'full'}: {cfg['reps']} batches of {cfg['batch']} a side | load avg {m['loadavg_start'][0]:.2f}"
          + ('' if _mallinfo2() else ' | no glibc mallinfo2: RSS instead'), flush=True)
    with start() as sim: R, same = asyncio.run(measure(sim, cfg, lambda s: print(s, flush=True)))
    med = {k: {f: statistics.median(v[f]) for f in ('growth', 'secs', 'left')} for k, v in R.items()}
    g, s = med['lisette']['growth'] - med['raw']['growth'], med['lisette']['secs'] / med['raw']['secs']
    print('-' * 72)
    for k in R: print(f"{k:<8} heap growth {med[k]['growth']:+8,.0f} B a conversation (median of {cfg['reps']}), "
                      f"batch {med[k]['secs']:.1f} s, objects left {med[k]['left']:+.0f}")
    ratio = (med['lisette']['growth'] / med['raw']['growth']   # a ratio of noise (or of a shrinking heap) means nothing
             if min(med['lisette']['growth'], med['raw']['growth']) > 50 else None)
    print(f"lisette - raw: {g:+,.0f} B a conversation" + (f"; ratio {ratio:.2f}" if ratio else '; no ratio: a growth within the noise') +
          f"; batch time ratio {s:.3f}" + ('' if same else '  (request bodies differ!)'))
    print(f"{time.perf_counter() - t0:.1f} s | load avg {os.getloadavg()[0]:.2f} at the end")
    path = Path(a.out) if a.out else HERE / ('memory-quick.json' if a.quick else 'memory.json')
    path.write_text(json.dumps(dict(machine=m, mode='quick' if a.quick else 'full', config=cfg, same_request=same,
                                    medians=med, batches=R, growth_difference=g, growth_ratio=ratio, time_ratio=s), indent=1))
    print(f'wrote {path}')
    return 0

if __name__ == '__main__': sys.exit(main())
