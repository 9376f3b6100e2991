"""The first request's stall: how long an async app's event loop stops while the first call of a fresh process runs.

litellm imports some seventy modules (the openai SDK's types among them) inside its first `acompletion`, on the
event loop's thread: every other task of the app waits. `AsyncChat` starts those imports in a worker thread when it is
made, and its first request awaits them off the loop (`warm_litellm`, 12_quirks). Measured in fresh processes, one
side at a time, interleaved: a ticker task wakes every 5 ms, and its longest wait past that, during the first call, is
the loop's stall. Raw litellm: `acompletion` right after `import litellm`. lisette, two ways: the chat made at
start-up, its warm-up done before the first request comes (an app's usual case); and `AsyncChat(...)` made and called
at once, so the warm-up's imports in their thread compete with the loop for the GIL (the worst case). The simulator
runs in a process of its own. The test of the cause is deterministic:
`tests/test_quirks.py::test_first_async_request_imports_nothing_on_the_loop` counts the imports on the loop's thread.

    python -m bench.stall            # 5 processes a side, both wire formats; writes bench/stall.json
    python -m bench.stall --quick    # 1 process a side (the tests' smoke run); bench/stall-quick.json (--out PATH)
"""
import json, os, statistics, subprocess, sys, time
from pathlib import Path

from bench.run import machine, GPT, SONNET, KEY, HERE
from bench.simproc import start

TICK = 0.005
SIDES = {'raw litellm': 'raw', 'lisette, chat made at start-up': 'lisette-early', 'lisette, chat made at the call': 'lisette'}

CHILD = '''
import asyncio, json, sys, time
side, model, base = sys.argv[1:4]
if side.startswith('lisette'):
    from lisette.asink import AsyncChat
    from lisette.quirks import warm_litellm
else: import litellm

async def main():
    if side == 'lisette-early':   # made at start-up: its warm-up is done before the first request
        chat = AsyncChat(model, api_base=base, api_key=KEY)
        await asyncio.wrap_future(warm_litellm())
    gaps, stop = [], False
    async def ticker():
        last = time.perf_counter()
        while not stop:
            await asyncio.sleep(TICK)
            now = time.perf_counter(); gaps.append(now - last - TICK); last = now
    tk = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)   # the ticker runs steadily before the call
    del gaps[:]
    t = time.perf_counter()
    if side == 'lisette-early': res = await chat('Hi!')
    elif side == 'lisette': res = await AsyncChat(model, api_base=base, api_key=KEY)('Hi!')
    else: res = await litellm.acompletion(model=model, messages=[{'role': 'user', 'content': 'Hi!'}], api_base=base, api_key=KEY, temperature=0)
    took = time.perf_counter() - t
    stop = True; await tk
    print(json.dumps(dict(stall=max(gaps), call=took, ok=bool(res.choices[0].message.content))))
asyncio.run(main())
'''.replace('TICK', repr(TICK)).replace('KEY', repr(KEY))

def one(side:str, model:str, base:str)->dict:
    "The first call's stall and time in a fresh process"
    r = subprocess.run([sys.executable, '-c', CHILD, side, model, base], capture_output=True, text=True, timeout=300,
                       env=os.environ | {'LITELLM_LOCAL_MODEL_COST_MAP': 'True'})
    if r.returncode: raise RuntimeError(f'the {side} process failed: {r.stderr[-2000:]}')
    return json.loads(r.stdout.strip().splitlines()[-1])

def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    quick, n = '--quick' in argv, 1 if '--quick' in argv else 5
    out = Path(argv[argv.index('--out') + 1]) if '--out' in argv else HERE / ('stall-quick.json' if quick else 'stall.json')
    m, rows = machine(), []
    print(f"lisette {m['lisette']} vs litellm {m['litellm']} | {m['cpu']}, {m['cores']} cores | {m['implementation']} {m['python']} | "
          f"{'quick' if quick else 'full'} | load avg {m['loadavg_start'][0]:.2f}", flush=True)
    with start(timeout=180) as sim:
        for fmt, model, base in (('openai', GPT, sim.openai_base), ('anthropic', SONNET, sim.anthropic_base)):
            got = {side: [] for side in SIDES}
            for i in range(n):
                for side in (list(SIDES) if i % 2 == 0 else list(SIDES)[::-1]): got[side].append(one(SIDES[side], model, base))
            for side, rs in got.items():
                row = dict(format=fmt, side=side, n=len(rs), ok=all(r['ok'] for r in rs),
                           stall=statistics.median(r['stall'] for r in rs), stall_max=max(r['stall'] for r in rs),
                           call=statistics.median(r['call'] for r in rs), samples=rs)
                rows.append(row)
                print(f"  {fmt:<10} {side:<30} stall {row['stall']*1e3:7.1f} ms (worst {row['stall_max']*1e3:.1f})  "
                      f"first call {row['call']*1e3:7.1f} ms{'' if row['ok'] else '  (an answer came empty!)'}", flush=True)
    m['loadavg_end'] = os.getloadavg()
    out.write_text(json.dumps(dict(machine=m, mode='quick' if quick else 'full', tick=TICK, rows=rows), indent=1))
    print(f"stall: the event loop's longest wait past its {TICK*1e3:.0f} ms tick during the first call, median of {n} processes "
          f"(target for lisette: under 50 ms) | wrote {out}")
    return 0

if __name__ == '__main__': sys.exit(main())
