"""Tools that start while the reply still streams (issue 15): one tool round, with and without `start_early`.

A streamed reply asks for 4 tool calls over 1 s: the simulator paces its events so that the calls' arguments are
whole at 0.25, 0.5, 0.75 and 1.0 s. The tools sleep 1.0, 0.75, 0.5 and 0.25 s, so if each starts as soon as its
arguments are whole, every one is done at 1.25 s: the floor. Without early start each waits for the whole reply
(1.0 s and the stream's tail) and the round takes the longest sleep more. Timed: from the call to the round's last
tool result the stream yields. `Chat` (sync tools, in threads) and `AsyncChat` (async tools), both wire formats.

    python -m bench.early            # 5 runs a case, medians; writes bench/early.json
    python -m bench.early --quick    # 1 run a case; writes bench/early-quick.json (--out PATH: elsewhere)
"""
import lisette, asyncio, json, statistics, sys, time
from pathlib import Path
from lisette import Chat, AsyncChat
from lisette.testing import Sim, Reply, Call

SLEEPS = [1.0, 0.75, 0.5, 0.25]
FLOOR = max(0.25*(i+1) + s for i,s in enumerate(SLEEPS))   # 1.25 s
# seconds between streamed events, so that call i's last argument piece is sent at 0.25*(i+1) s: an OpenAI stream
# has a first chunk, then 4 events a call (its start, 3 argument pieces); an Anthropic one has message_start, then
# per call a block start (the first one followed by a ping), 3 pieces and a block stop
PACE = {'openai': 0.25/4, 'anthropic': 0.25/5}

def nap(i:int)->str:
    "Sleep as long as call `i` is meant to"
    time.sleep(SLEEPS[i]); return f'nap {i} done'

async def anap(i:int)->str:
    "Sleep as long as call `i` is meant to"
    await asyncio.sleep(SLEEPS[i]); return f'nap {i} done'
anap.__name__ = 'nap'

def script(sim, fmt):
    sim.script(Reply(calls=[Call('nap', {'i': i}) for i in range(len(SLEEPS))], pace=PACE[fmt]), Reply(text='All done.'))

def is_result(o): return isinstance(o, dict) and o.get('role') == 'tool'

def run_sync(sim, model, base, fmt, early:bool)->float:
    script(sim, fmt)
    chat, t, last = Chat(model, api_base=base, api_key='sk-bench', tools=[nap], start_early=early), time.perf_counter(), None
    for o in chat('Nap, four times.', stream=True):
        if is_result(o): last = time.perf_counter() - t
    return last

async def run_async(sim, model, base, fmt, early:bool)->float:
    script(sim, fmt)
    chat, t, last = AsyncChat(model, api_base=base, api_key='sk-bench', tools=[anap], start_early=early), time.perf_counter(), None
    async for o in await chat('Nap, four times.', stream=True):
        if is_result(o): last = time.perf_counter() - t
    return last

def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    n = 1 if '--quick' in argv else 5
    sim, rows = Sim(), []
    models = [('openai', 'openai/gpt-4o-mini', sim.openai_base), ('anthropic', 'anthropic/claude-sonnet-4-5', sim.anthropic_base)]
    try:
        for fmt, model, base in models: run_sync(sim, model, base, fmt, True); asyncio.run(run_async(sim, model, base, fmt, True))  # warm-up
        for fmt, model, base in models:
            for cls, go in (('Chat', lambda e: run_sync(sim, model, base, fmt, e)), ('AsyncChat', lambda e: asyncio.run(run_async(sim, model, base, fmt, e)))):
                late, early = [], []
                for k in range(n):   # interleaved
                    for e, xs in ((False, late), (True, early)) if k % 2 == 0 else ((True, early), (False, late)): xs.append(go(e))
                r = dict(format=fmt, cls=cls, without=statistics.median(late), early=statistics.median(early), floor=FLOOR)
                r['ratio'] = r['early'] / FLOOR
                rows.append(r)
                print(f"{cls:9} {fmt:9}  without {r['without']:.3f} s   start_early {r['early']:.3f} s   floor {FLOOR:.2f} s   "
                      f"early/floor {r['ratio']:.3f} {'PASS' if r['ratio'] <= 1.10 else 'MISS'} (target <= 1.10)", flush=True)
    finally: sim.close()
    out = Path(argv[argv.index('--out') + 1]) if '--out' in argv else Path(__file__).parent / ('early-quick.json' if n == 1 else 'early.json')
    out.write_text(json.dumps(dict(runs=n, sleeps=SLEEPS, rows=rows), indent=1) + '\n')
    return 0

if __name__ == '__main__': sys.exit(main())
