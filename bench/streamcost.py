"""lisette's own share of a long stream's cost, and litellm's flags that skip per-chunk work.
`python -m bench.streamcost [-n 2000] [--rounds 12] [--flags]`

Without `--flags`: a 2000-chunk stream read to the end with its whole response, CPU time and time to first text, medians
of interleaved runs, in both wire formats: raw litellm (`acompletion`, then `stream_chunk_builder`), lisette as it was
(`ReplyBuilder` reduced to keeping the chunks and `stream_chunk_builder` on all of them at the end) and lisette now.
With `--flags`: raw litellm's stream, sync and async, under each of litellm's flags that skip per-chunk work."""
import argparse, asyncio, gc, statistics, sys, time
from pathlib import Path

if __package__ in (None, ''): sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.run import u, GPT, SONNET, KEY   # bench.run also sets LITELLM_LOCAL_MODEL_COST_MAP
from bench.simproc import start, STREAM

FLAGS = {'defaults': {}, 'disable_streaming_logging': dict(disable_streaming_logging=True),
         'turn_off_message_logging': dict(turn_off_message_logging=True), 'disable_token_counter': dict(disable_token_counter=True)}

def _kw(model, base, n):
    return dict(model=model, messages=[u(f'{STREAM}{n}')], api_base=base, api_key=KEY, temperature=0, stream=True,
                **({} if model == SONNET else dict(stream_options={'include_usage': True})))

def sides(model, base, n)->dict:
    "raw litellm, lisette with the end-of-stream second pass, lisette now: async (mark) -> the whole text"
    import litellm, lisette.replies as R
    from litellm import ModelResponseStream
    from lisette import AsyncChat, delta_text
    async def raw(mark):
        chunks = []
        async for ch in await litellm.acompletion(**_kw(model, base, n)):
            if ch.choices and ch.choices[0].delta.content: mark()
            chunks.append(ch)
        return litellm.stream_chunk_builder(chunks).choices[0].message.content
    async def lis(mark):
        async for o in await AsyncChat(model, api_base=base, api_key=KEY)(f'{STREAM}{n}', stream=True):
            if isinstance(o, ModelResponseStream) and delta_text(o): mark()
        return o.choices[0].message.content
    def keep(self, o): self.chunks.append(o)
    def rebuild(self): return litellm.stream_chunk_builder(self.chunks)
    async def before(mark):
        add, build = R.ReplyBuilder.add, R.ReplyBuilder.build
        R.ReplyBuilder.add, R.ReplyBuilder.build = keep, rebuild
        try: return await lis(mark)
        finally: R.ReplyBuilder.add, R.ReplyBuilder.build = add, build
    return {'raw litellm': raw, 'lisette, second pass': before, 'lisette now': lis}

async def _timed(f, n):
    t = {}
    def mark(): t.setdefault('first', time.perf_counter())
    gc.collect()
    c0, w0 = time.process_time(), time.perf_counter()
    assert len(await f(mark)) == 4*n
    return time.process_time() - c0, t['first'] - w0

async def compare(sim, n, rounds):
    for model, base in ((GPT, sim.openai_base), (SONNET, sim.anthropic_base)):
        ss = sides(model, base, n); ks = list(ss)
        for f in ss.values(): await _timed(f, n)
        gc.freeze()
        res = {k: [] for k in ks}
        for i in range(rounds):
            order = ks[i % 3:] + ks[:i % 3]
            for k in (order if i % 2 == 0 else order[::-1]): res[k].append(await _timed(ss[k], n))
        cpu = {k: statistics.median(c for c,_ in v) for k,v in res.items()}
        ttft = {k: statistics.median(t for _,t in v) for k,v in res.items()}
        r = 'raw litellm'
        print(f"{model}, {n} chunks, {rounds} rounds: " + '; '.join(
            f"{k} cpu {cpu[k]*1e3:.0f} ms ({cpu[k]/cpu[r]:.3f}) ttft {ttft[k]*1e3:.1f} ms ({ttft[k]/ttft[r]:.2f})" for k in ks), flush=True)
        gc.unfreeze()

def flags(sim, n, rounds):
    import litellm
    def sync_run(model, base): return litellm.stream_chunk_builder(list(litellm.completion(**_kw(model, base, n)))).choices[0].message.content
    async def async_run(model, base): return litellm.stream_chunk_builder([c async for c in await litellm.acompletion(**_kw(model, base, n))]).choices[0].message.content
    def timed(f, fl):
        old = {k: getattr(litellm, k) for k in fl}
        for k, v in fl.items(): setattr(litellm, k, v)
        try:
            gc.collect(); c = time.process_time(); out = f(); c = time.process_time() - c
            time.sleep(0.3)   # litellm's logging threads: their CPU after the stream ended counts in the next run
        finally:
            for k, v in old.items(): setattr(litellm, k, v)
        assert len(out) == 4*n
        return c
    for model, base in ((GPT, sim.openai_base), (SONNET, sim.anthropic_base)):
        for mode in ('sync', 'async'):
            f = (lambda: sync_run(model, base)) if mode == 'sync' else (lambda: asyncio.run(async_run(model, base)))
            ks = list(FLAGS)
            for k in ks: timed(f, FLAGS[k])
            res = {k: [] for k in ks}
            for i in range(rounds):
                for k in ks[i % len(ks):] + ks[:i % len(ks)]: res[k].append(timed(f, FLAGS[k]))
            med = {k: statistics.median(v) for k, v in res.items()}
            print(f"{model} {mode}: " + '; '.join(f"{k} {med[k]*1e3:.0f} ms ({med[k]/med['defaults']:.3f})" for k in ks), flush=True)

def main(argv=None):
    ap = argparse.ArgumentParser(prog='python -m bench.streamcost', description=__doc__)
    ap.add_argument('-n', type=int, default=2000, help='chunks a stream')
    ap.add_argument('--rounds', type=int, default=12)
    ap.add_argument('--flags', action='store_true', help="litellm's flags instead of lisette's cost")
    a = ap.parse_args(argv)
    with start() as sim:
        if a.flags: flags(sim, a.n, a.rounds)
        else: asyncio.run(compare(sim, a.n, a.rounds))

if __name__ == '__main__': main()
