"""lisette beside the reference stacks: the openai and anthropic SDKs (the floors), raw litellm, and pydantic-ai (the
peer), the same requests to the same simulator process, in both wire formats. Interleaved rounds, medians, wall and
CPU time, as ratios to the format's SDK. `python -m bench.peers [--quick] [--out PATH]`"""
import argparse, asyncio, gc, json, os, re, statistics, sys, time, warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bench.run import machine, _settle, u, GPT, SONNET, KEY, HERE   # bench.run also sets LITELLM_LOCAL_MODEL_COST_MAP
from bench.simproc import start, STREAM, TOOLS, TEXT

warnings.filterwarnings('ignore', message=r"The model '.*' is deprecated")   # the anthropic SDK's, on each request
FMTS = {'openai': GPT, 'anthropic': SONNET}   # each wire format's model, as litellm names it
USAGE = dict(stream_options={'include_usage': True})   # what lisette asks of every stream (litellm drops it for Anthropic)
MAX_TOKENS = 64000   # what litellm (so lisette) and pydantic-ai send for claude-sonnet-4-5 by default: the others send it too

# Sizes, and rounds (each stack once a round) per figure, of a full run and of `--quick`
FULL  = dict(turn=40, tools=30, conc=128, nconc=6, chunks=2000, nstream=6, short=20, first=60)
QUICK = dict(turn=3,  tools=2,  conc=8,   nconc=2, chunks=100,  nstream=2, short=20, first=3)

async def nap(i:int)->str:
    "Sleep a moment, then say so."
    return f'slept {i}'   # instant: the figure is the stacks' own work around a tool round

class Mark:
    "The time of the first call: a stream's first text"
    t = None
    def __call__(self):
        if self.t is None: self.t = time.perf_counter()

# ---------------------------------------------------------------- the stacks: each answers `turn`, `tool_round`, `stream`

def _tool_schema():
    "The OpenAI-format schema lisette sends for `nap`, which the SDKs send too"
    from lisette.tools import lite_mk_func
    return lite_mk_func(nap)

class OpenAISDK:
    "The floor for the OpenAI format: `AsyncOpenAI`, one client, the tool round by hand"
    name = 'openai SDK'
    def __init__(self, base):
        import openai
        self.c, self.kw = openai.AsyncOpenAI(base_url=base, api_key=KEY), dict(model='gpt-4o', temperature=0)
        self.tools = [_tool_schema()]

    async def turn(self, msg):
        return (await self.c.chat.completions.create(messages=[u(msg)], **self.kw)).choices[0].message.content

    async def tool_round(self, msg):
        msgs, kw = [u(msg)], self.kw | dict(tools=self.tools)
        m = (await self.c.chat.completions.create(messages=msgs, **kw)).choices[0].message
        calls = [dict(function=dict(arguments=tc.function.arguments, name=tc.function.name), id=tc.id, type='function')
                 for tc in m.tool_calls]
        outs = await asyncio.gather(*[nap(**json.loads(tc.function.arguments)) for tc in m.tool_calls])
        msgs += [dict(role='assistant', tool_calls=calls)]
        msgs += [dict(role='tool', tool_call_id=tc.id, name=tc.function.name, content=o) for tc, o in zip(m.tool_calls, outs)]
        return (await self.c.chat.completions.create(messages=msgs, **kw)).choices[0].message.content

    async def stream(self, msg, mark):
        parts = []
        async for ch in await self.c.chat.completions.create(messages=[u(msg)], stream=True, **USAGE, **self.kw):
            if ch.choices and ch.choices[0].delta.content: mark(); parts.append(ch.choices[0].delta.content)
        return ''.join(parts)

def _text(content)->str: return ''.join(b.text for b in content if b.type == 'text')

class AnthropicSDK:
    "The floor for the Anthropic format: `AsyncAnthropic`, one client, the tool round by hand"
    name = 'anthropic SDK'
    def __init__(self, base):
        import anthropic
        self.c = anthropic.AsyncAnthropic(base_url=base, api_key=KEY)
        # timeout: the SDK refuses a non-streaming request with this max_tokens unless it's given; it has no `temperature`
        self.kw = dict(model='claude-sonnet-4-5', max_tokens=MAX_TOKENS, extra_body=dict(temperature=0), timeout=600)
        f = _tool_schema()['function']
        self.tools = [dict(name=f['name'], input_schema=f['parameters'], type='custom', description=f['description'])]

    @staticmethod
    def u(msg): return dict(role='user', content=[dict(type='text', text=msg)])
    async def turn(self, msg): return _text((await self.c.messages.create(messages=[self.u(msg)], **self.kw)).content)

    async def tool_round(self, msg):
        msgs, kw = [self.u(msg)], self.kw | dict(tools=self.tools)
        r = await self.c.messages.create(messages=msgs, **kw)
        uses = [b for b in r.content if b.type == 'tool_use']
        outs = await asyncio.gather(*[nap(**b.input) for b in uses])
        msgs.append(dict(role='assistant', content=[dict(type='tool_use', id=b.id, name=b.name, input=b.input) for b in uses]))
        msgs.append(dict(role='user', content=[dict(type='tool_result', tool_use_id=b.id, content=o) for b, o in zip(uses, outs)]))
        return _text((await self.c.messages.create(messages=msgs, **kw)).content)

    async def stream(self, msg, mark):
        parts = []
        async for ev in await self.c.messages.create(messages=[self.u(msg)], stream=True, **self.kw):
            if ev.type == 'content_block_delta' and ev.delta.type == 'text_delta': mark(); parts.append(ev.delta.text)
        return ''.join(parts)

class RawLitellm:
    "`litellm.acompletion`, the tool round by hand, a stream rebuilt with `stream_chunk_builder`"
    name = 'raw litellm'
    def __init__(self, model, base):
        import litellm
        self.lm, self.kw, self.tools = litellm, dict(model=model, api_base=base, api_key=KEY, temperature=0), [_tool_schema()]

    async def turn(self, msg): return (await self.lm.acompletion(messages=[u(msg)], **self.kw)).choices[0].message.content

    async def tool_round(self, msg):
        msgs, kw = [u(msg)], self.kw | dict(tools=self.tools)
        m = (await self.lm.acompletion(messages=msgs, **kw)).choices[0].message
        outs = await asyncio.gather(*[nap(**json.loads(tc.function.arguments)) for tc in m.tool_calls])
        calls = [tc.model_dump(exclude_none=True) for tc in m.tool_calls]
        msgs.append({'role': 'assistant', **({'content': m.content} if m.content else {}), 'tool_calls': calls})
        msgs += [{'role': 'tool', 'tool_call_id': tc.id, 'name': tc.function.name, 'content': o} for tc, o in zip(m.tool_calls, outs)]
        return (await self.lm.acompletion(messages=msgs, **kw)).choices[0].message.content

    async def stream(self, msg, mark):
        chunks = []
        async for ch in await self.lm.acompletion(messages=[u(msg)], stream=True, **USAGE, **self.kw):
            if ch.choices and ch.choices[0].delta.content: mark()
            chunks.append(ch)
        return self.lm.stream_chunk_builder(chunks).choices[0].message.content

class Lisette:
    "A fresh `AsyncChat` for each conversation; the stream read with `async for`, its last item the full response"
    name = 'lisette'
    def __init__(self, model, base):
        from lisette.asink import AsyncChat
        self.chat = lambda **kw: AsyncChat(model, api_base=base, api_key=KEY, **kw)

    async def turn(self, msg): return (await self.chat()(msg)).choices[0].message.content
    async def tool_round(self, msg): return (await self.chat(tools=[nap])(msg)).choices[0].message.content

    async def stream(self, msg, mark):
        from litellm import ModelResponseStream
        from lisette import delta_text
        async for o in await self.chat()(msg, stream=True):
            if isinstance(o, ModelResponseStream) and delta_text(o): mark()
        return o.choices[0].message.content

class PydanticAI:
    "One `Agent` for plain turns and one with the tool; a stream read with `stream_text(delta=True, debounce_by=None)`"
    name = 'pydantic-ai'
    def __init__(self, fmt, base):
        from pydantic_ai import Agent
        if fmt == 'openai':
            from pydantic_ai.models.openai import OpenAIChatModel
            from pydantic_ai.providers.openai import OpenAIProvider
            model = OpenAIChatModel('gpt-4o', provider=OpenAIProvider(base_url=base, api_key=KEY))
        else:
            from pydantic_ai.models.anthropic import AnthropicModel
            from pydantic_ai.providers.anthropic import AnthropicProvider
            model = AnthropicModel('claude-sonnet-4-5', provider=AnthropicProvider(base_url=base, api_key=KEY))
        ms = dict(temperature=0, max_tokens=MAX_TOKENS) if fmt == 'anthropic' else dict(temperature=0)
        self.agent, self.tool_agent = Agent(model, model_settings=ms), Agent(model, model_settings=ms, tools=[nap])

    async def turn(self, msg): return (await self.agent.run(msg)).output
    async def tool_round(self, msg): return (await self.tool_agent.run(msg)).output

    async def stream(self, msg, mark):
        async with self.agent.run_stream(msg) as r:
            async for _ in r.stream_text(delta=True, debounce_by=None): mark()
            return await r.get_output()

def stacks(fmt:str, base:str, notes:list)->list:
    "The stacks of a wire format, floor first; one whose package is missing is left out, with a note"
    model, sdk = FMTS[fmt], (OpenAISDK if fmt == 'openai' else AnthropicSDK)
    makers = {'sdk': lambda: sdk(base), 'raw litellm': lambda: RawLitellm(model, base),
              'lisette': lambda: Lisette(model, base), 'pydantic-ai': lambda: PydanticAI(fmt, base)}
    out = []
    for k, make in makers.items():
        try: out.append(make())
        except ImportError as e:
            notes.append(f"{sdk.name if k == 'sdk' else k}: skipped, not installed ({e.name or e}); pip install -e '.[bench]'")
    if not isinstance(out[0], sdk): notes.append(f"{fmt} format: ratios to raw litellm, as the {sdk.name} is missing")
    return out

# ---------------------------------------------------------------- the figures

@dataclass
class Figure:
    key: str        # its config key of rounds
    name: str
    run: object     # async (stack[, mark]) -> the check's outcome (True: the whole answer came)
    ttft: bool = False

def figures(cfg)->list:
    k, n, m, tmsg = cfg['conc'], cfg['chunks'], cfg['short'], f'{TOOLS}1'
    async def one(s): return await s.turn('Hi!') == TEXT
    async def tool(s): return await s.tool_round(tmsg) == TEXT
    async def conc(s): return all(t == TEXT for t in await asyncio.gather(*[s.turn(f'Hi {i}!') for i in range(k)]))
    async def stream(s, mark=None): return len(await s.stream(f'{STREAM}{n}', mark or Mark()) or '') == 4*n
    async def short(s, mark=None): return len(await s.stream(f'{STREAM}{m}', mark or Mark()) or '') == 4*m
    # Time to first token has a figure of its own: a short stream, many rounds. In the long stream's few rounds, the first
    # token is at the mercy of litellm's rebuild of the stream before it, which runs in a worker thread after it ends.
    return [Figure('turn', 'one turn', one), Figure('tools', 'one tool round', tool),
            Figure('nconc', f'{k} concurrent turns', conc), Figure('nstream', f'{n}-chunk stream', stream),
            Figure('first', f'{m}-chunk stream', short, ttft=True)]

# ---------------------------------------------------------------- what each stack sent

def _blocks_text(c)->str:
    if isinstance(c, str): return c
    return ''.join(b.get('text', '') for b in c or [] if isinstance(b, dict) and b.get('type') == 'text')

def _turns(fmt, msgs)->list:
    "The messages as (role, text, tool calls) and ('tool', result) tuples, whatever the wire format"
    out = []
    for m in msgs:
        c = m.get('content')
        if fmt == 'openai':
            if m['role'] == 'tool': out.append(('tool', _blocks_text(c)))
            else: out.append((m['role'], _blocks_text(c), [(t['function']['name'], json.loads(t['function']['arguments']))
                                                          for t in m.get('tool_calls') or []]))
            continue
        blocks = [dict(type='text', text=c)] if isinstance(c, str) else c or []
        res = [b for b in blocks if b.get('type') == 'tool_result']
        out += [('tool', _blocks_text(b.get('content'))) for b in res]
        if len(res) < len(blocks):
            out.append((m['role'], _blocks_text(blocks), [(b['name'], b['input']) for b in blocks if b.get('type') == 'tool_use']))
    return out

def gist(fmt, body)->dict:
    "What a request asks, in any stack's spelling: model, sampling, streaming, the conversation, the tools offered"
    tools = [t.get('function', t) for t in body.get('tools') or []]
    return dict(model=body.get('model'), temperature=body.get('temperature'), max_tokens=body.get('max_tokens'),
                stream=bool(body.get('stream')), messages=_turns(fmt, body.get('messages') or []),
                tools=sorted((t['name'], sorted((t.get('parameters') or t.get('input_schema'))['properties'])) for t in tools))

def _norm(bodies)->list:
    "Bodies in a fixed order with the simulator's request numbers (in tool call ids) blanked"
    return sorted((json.loads(re.sub(r'sim\d{4}', 'simN', json.dumps(b))) for b in bodies), key=lambda b: json.dumps(b, sort_keys=True))

def compare(fmt, floor:list, mine:list)->str:
    "'identical' (as JSON), 'equivalent' (the same gist), or which parts of the gist differ from the floor's"
    a, b = _norm(floor), _norm(mine)
    if len(a) != len(b): return f'differs: {len(b)} requests, not {len(a)}'
    if a == b: return 'identical'
    ga, gb = [gist(fmt, x) for x in a], [gist(fmt, x) for x in b]
    if ga == gb: return 'equivalent'
    return 'differs: in ' + ', '.join(sorted({k for x, y in zip(ga, gb) for k in x if x[k] != y[k]}))

# ---------------------------------------------------------------- timing

async def _quiet(window=0.01, most=0.0005, limit=5.0)->float:
    "Wait until this process is idle (under `most` s of CPU in a `window` s): the CPU time when its last busy window ended"
    end = time.perf_counter() + limit
    while True:
        c = time.process_time()
        await asyncio.sleep(window)
        if time.process_time() - c < most or time.perf_counter() > end: return c

async def _timed(fig, s):
    """One run of `fig` by stack `s`: (wall s, CPU s, time to first text or None, the check's outcome).
    litellm goes on working after a call returns (its logging; at a stream's end, a second rebuild of the stream in a
    worker thread). A run starts once the process is idle, so none is charged for the one before it, and its CPU time
    runs until the process is idle again, so each is charged for its own."""
    gc.collect()
    await _quiet()
    mark = Mark()
    t, c = time.perf_counter(), time.process_time()
    ok = await (fig.run(s, mark) if fig.ttft else fig.run(s))
    wall = time.perf_counter() - t
    return wall, await _quiet() - c, (None if mark.t is None else mark.t - t), ok

async def measure(sim, fmt, fig, ss, n)->dict:
    "Each stack's warm-up run (its request bodies kept, compared to the floor's), then `n` rounds in rotating order"
    sent = {}
    for s in ss:
        sim.reset(); await fig.run(s); sent[s.name] = sim.bodies()
    sim.reset()
    _settle()
    runs = {s.name: [] for s in ss}
    for i in range(n):
        for s in ss[i % len(ss):] + ss[:i % len(ss)]: runs[s.name].append(await _timed(fig, s))
        sim.reset()
    floor = ss[0].name
    return {s.name: dict(wall=[r[0] for r in runs[s.name]], cpu=[r[1] for r in runs[s.name]],
                         ttft=[r[2] for r in runs[s.name]] if fig.ttft else None, answer_ok=all(r[3] for r in runs[s.name]),
                         request=compare(fmt, sent[floor], sent[s.name])) for s in ss}

def _med(xs): return statistics.median(xs) if xs and None not in xs else None

def rows(fmt, fig, runs)->list:
    "A result per stack: medians, and their ratios to the floor's (the first)"
    floor = next(iter(runs.values()))
    out = []
    for name, r in runs.items():
        row = dict(fmt=fmt, figure=f'{fig.name} ({fmt})', stack=name, n=len(r['wall']), answer_ok=r['answer_ok'], request=r['request'])
        for k in ('wall', 'cpu', 'ttft'):
            m, f = _med(r[k]), _med(floor[k])
            if m is None: continue
            row[k] = dict(median=m, min=min(r[k]), max=max(r[k]), samples=r[k])
            row[f'{k}_ratio'] = m / f
        out.append(row)
    return out

# ---------------------------------------------------------------- the table

COLS = ('sdk', 'raw litellm', 'lisette', 'pydantic-ai')
MARKS = {'identical': '', 'equivalent': '~'}

def _cell(r, k)->str:
    if r is None or k not in r: return f"{'-':>15}"
    flag = MARKS.get(r['request'], '!') + ('' if r['answer_ok'] else 'X')
    return f"{r[k]['median']*1e3:>8.1f} {r[k+'_ratio']:>5.2f}{flag:<1}"

def table(results:list)->list:
    "The side-by-side lines: a figure's wall, CPU and (streams) first-text rows, a column per stack"
    head = f"{'figure':<32} {'clock':<5} " + ' '.join(f'{c:>15}' for c in ('SDK (floor)',) + COLS[1:])
    lines, figs = [head, '-'*len(head)], {}
    for r in results: figs.setdefault(r['figure'], {})[r['stack'] if 'SDK' not in r['stack'] else 'sdk'] = r
    for fig, by in figs.items():
        for k, label in (('wall', 'wall'), ('cpu', 'cpu'), ('ttft', 'ttft')):
            if not any(k in r for r in by.values()): continue
            lines.append(f"{fig if k == 'wall' else '':<32} {label:<5} " + ' '.join(_cell(by.get(c), k) for c in COLS))
    return lines

def versus_litellm(results:list)->list:
    "lisette's medians over raw litellm's, a line per figure: the targets are about these ratios"
    by = {(r['figure'], r['stack']): r for r in results}
    lines = []
    for fig in dict.fromkeys(r['figure'] for r in results):
        l, raw = by.get((fig, 'lisette')), by.get((fig, 'raw litellm'))
        if not (l and raw): continue
        ks = [k for k in ('wall', 'cpu', 'ttft') if k in l and k in raw]
        lines.append(f"{fig:<32} " + '  '.join(f"{k} {l[k]['median'] / raw[k]['median']:.3f}" for k in ks))
    return lines

def _preload():
    "Import every stack's modules (the simulator's process starts meanwhile: both take seconds)"
    import lisette.asink, openai
    for mod in ('anthropic', 'pydantic_ai.models.openai', 'pydantic_ai.models.anthropic'):
        try: __import__(mod)
        except ImportError: pass

def versions()->dict:
    import importlib.metadata as md
    def v(d):
        try: return md.version(d)
        except md.PackageNotFoundError: return None
    return {d: v(d) for d in ('openai', 'anthropic', 'pydantic-ai-slim')}

LEGEND = ("each cell: median ms, then the ratio to the format's SDK (the floor); wall: the run's time, cpu: this process's "
          "CPU time (the simulator runs in its own), ttft: the time to the stream's first text. After the ratio, ~: the "
          "requests are equivalent to the floor's, not identical; !: they differ (see below); X: an answer came incomplete")

def _progress(fig, rs)->str:
    return f"  {fig:<32} " + '  '.join(f"{r['stack']} {r['wall']['median']*1e3:.1f} ms" for r in rs)

async def run_all(sim, cfg, notes)->list:
    "Every figure in both wire formats: a result per stack and figure"
    out = []
    for fmt in FMTS:
        ss = stacks(fmt, sim.openai_base if fmt == 'openai' else sim.anthropic_base, notes)
        for fig in figures(cfg):
            t = time.perf_counter()
            rs = rows(fmt, fig, await measure(sim, fmt, fig, ss, cfg[fig.key]))
            for r in rs: r['seconds'] = time.perf_counter() - t
            print(_progress(rs[0]['figure'], rs), flush=True)
            out += rs
    return out

def header(m, quick)->str:
    return (f"lisette {m['lisette']} | litellm {m['litellm']} | openai {m['openai']} | anthropic {m['anthropic']} | "
            f"pydantic-ai {m['pydantic-ai-slim']} | {m['cpu']}, {m['cores']} cores | {m['implementation']} {m['python']} | "
            f"{'quick' if quick else 'full'} | load avg {m['loadavg_start'][0]:.2f}")

def main(argv=None):
    ap = argparse.ArgumentParser(prog='python -m bench.peers', description=__doc__)
    ap.add_argument('--quick', action='store_true', help='smoke mode: few rounds, small sizes')
    ap.add_argument('--out', default=None, help='the JSON file (default: bench/peers.json, or peers-quick.json)')
    a = ap.parse_args(argv)
    cfg, t0, notes = (QUICK if a.quick else FULL), time.perf_counter(), []
    with ThreadPoolExecutor(1) as ex:
        loaded = ex.submit(lambda: (_preload(), machine() | versions())[1])   # while the simulator's process starts
        with start(timeout=180) as sim:   # its start-up competes with these imports for the cores
            m = loaded.result()
            print(header(m, a.quick), flush=True)
            out = asyncio.run(run_all(sim, cfg, notes))
    m['loadavg_end'], secs = os.getloadavg(), time.perf_counter() - t0
    print('\n'.join([''] + table(out)))
    print(LEGEND)
    print('\n'.join(['', 'lisette / raw litellm (medians):'] + versus_litellm(out)))
    for r in out:
        if r['request'] not in MARKS: notes.append(f"{r['stack']}, {r['figure']}: its requests differ from the floor's, {r['request'][9:]}")
        if not r['answer_ok']: notes.append(f"{r['stack']}, {r['figure']}: an answer came incomplete")
    for n in dict.fromkeys(notes): print('note:', n)
    print(f"{secs:.1f} s | load avg {m['loadavg_end'][0]:.2f} at the end")
    path = Path(a.out) if a.out else HERE / ('peers-quick.json' if a.quick else 'peers.json')
    path.write_text(json.dumps(dict(machine=m, mode='quick' if a.quick else 'full', config=cfg, seconds=secs,
                                    notes=list(dict.fromkeys(notes)), figures=out), indent=1))
    print(f'wrote {path}')
    return 0

if __name__ == '__main__': sys.exit(main())
