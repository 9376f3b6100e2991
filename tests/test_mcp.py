"""`lisette.mcp`: the tools of MCP servers (stdio and streamable HTTP, written in tests/mcp_servers with the `mcp`
package's own server API) in `Chat` and `AsyncChat`, in both wire formats: schemas and results as the provider
got them, failing and slow tools, streamed rounds, a server dying mid-chat, and no server process left behind."""
import asyncio, os, signal, subprocess, sys, threading, uuid
from pathlib import Path
import pytest
from lisette import Chat, AsyncChat, CANCELLED   # first: it keeps litellm's import offline and quiet
from lisette.testing import Reply, Call
from lisette.mcp import MCPServer
from helpers import *

CALC = str(Path(__file__).parent/'mcp_servers'/'calc.py')
CLASSES = pytest.mark.parametrize('cls', [Chat, AsyncChat], ids=['sync', 'async'])

def procs(tag:str)->list:
    "The pids of the processes (zombies too) whose command line holds `tag`, this one aside"
    out = []
    for p in Path('/proc').iterdir():
        try:
            if p.name.isdigit() and int(p.name) != os.getpid() and tag.encode() in (p/'cmdline').read_bytes(): out.append(int(p.name))
        except OSError: pass   # it ended while we looked
    return out

@pytest.fixture
def tag():
    "A mark for one test's server command lines; no process carrying it may outlive the test"
    t = f'lisette-test-{uuid.uuid4().hex}'
    yield t
    assert procs(t) == [], 'a server process was left behind'

def stdio(tag, **kw): return MCPServer([sys.executable, CALC, tag], **kw)

def start_http(port=0):
    "The calc server over streamable HTTP, in a process of its own: the process and its URL"
    p = subprocess.Popen([sys.executable, CALC, 'http', str(port)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return p, f"http://127.0.0.1:{p.stdout.readline().split()[1]}/mcp"

@pytest.fixture
def http():
    p, url = start_http()
    yield p, url
    p.kill(); p.wait()

def schema_sent(body, name):
    "The parameters schema of tool `name` in a request body (either wire format)"
    for t in body['tools']:
        if t.get('name') == name: return t['input_schema']
        if t.get('function', {}).get('name') == name: return t['function']['parameters']

async def chat_round(cls, sim, model, srv, *replies, msg='Go.', **kw):
    sim.script(*replies, Reply(text='Done.'))
    chat = mk(cls, sim, model, tools=srv.tools, **kw)
    res = await ask(chat, msg)
    return chat, res

# ---------------------------------------------------------------- schemas and results

@CLASSES
@MODELS
async def test_stdio_tools_schema_and_result(sim, model, cls, tag):
    async with stdio(tag) as srv:
        server_schema = {t.__name__: t.__tool_schema__['parameters'] for t in srv.tools}['add']
        chat, res = await chat_round(cls, sim, model, srv, Reply(calls=[Call('add', {'a': 15, 'b': 23})]))
    assert text(res) == 'Done.'
    assert tool_texts(chat.hist) == ['38']
    sent = schema_sent(sim.bodies[0], 'add')
    if model == GPT: assert sent == server_schema   # as the server gave it, title and all
    else: assert (sent['properties'], sent['required']) == (server_schema['properties'], server_schema['required'])
    assert '38' in body_texts(sim.bodies[1])
    accepted(sim, model)

@CLASSES
@MODELS
async def test_http_tools(sim, model, cls, http):
    async with MCPServer(http[1]) as srv:
        chat, res = await chat_round(cls, sim, model, srv, Reply(calls=[Call('add', {'a': 1, 'b': 2}), Call('pixel', {})]))
    assert tool_texts(chat.hist) == ['3', '[image: image/png, 72 bytes; not shown: lisette sends tool results as text]']
    assert '3' in body_texts(sim.bodies[1])
    accepted(sim, model)

@CLASSES
@MODELS
async def test_failing_tool(sim, model, cls, tag):
    async with stdio(tag) as srv:
        chat, res = await chat_round(cls, sim, model, srv, Reply(calls=[Call('fail', {'why': 'no reason'}), Call('add', {'a': 2, 'b': 2})]))
    assert tool_texts(chat.hist) == ['Error: Error executing tool fail: it failed: no reason', '4']
    assert text(res) == 'Done.'
    accepted(sim, model)

@CLASSES
async def test_slow_tool_times_out(sim, cls, tag):
    "The server's own timeout answers the call; the connection stays good for the next"
    with stdio(tag, timeout=0.5) as srv:
        chat, _ = await chat_round(cls, sim, SONNET, srv, Reply(calls=[Call('slow', {'seconds': 60})]), Reply(calls=[Call('add', {'a': 1, 'b': 1})]))
    assert tool_texts(chat.hist)[0].endswith("didn't answer `slow` within 0.5 s")
    assert tool_texts(chat.hist)[1] == '2'
    accepted(sim, SONNET)

@CLASSES
@MODELS
async def test_streamed_rounds(sim, model, cls, http):
    async with MCPServer(http[1]) as srv:
        sim.script(Reply(text='First.', calls=[Call('add', {'a': 1, 'b': 2})], chunks=2),
                   Reply(calls=[Call('add', {'a': 3, 'b': 5}), Call('fail', {'why': 'streamed'})]), Reply(text='3, then 8.', chunks=3))
        chat = mk(cls, sim, model, tools=srv.tools)
        out = await collect(chat, 'Add twice.', stream=True)
    results = [o['content'] for o in out if isinstance(o, dict)]
    assert results == ['3', '8', 'Error: Error executing tool fail: it failed: streamed'] == tool_texts(chat.hist)
    assert roles(chat.hist) == ['user', 'assistant', 'tool', 'assistant', 'tool', 'tool', 'assistant']
    accepted(sim, model)

# ---------------------------------------------------------------- a dying server

@CLASSES
@MODELS
async def test_stdio_server_dies_and_restarts(sim, model, cls, tag):
    async with stdio(tag) as srv:
        chat, _ = await chat_round(cls, sim, model, srv, Reply(calls=[Call('pid', {})]), Reply(calls=[Call('crash', {})]), Reply(calls=[Call('pid', {})]))
        first, err, second = tool_texts(chat.hist)
        assert err.startswith('Error: the MCP server') and err.endswith('stopped during the call. The next call starts it again')
        assert first != second and procs(tag) == [int(second)]   # a new process; the dead one is reaped
    accepted(sim, model)

@CLASSES
async def test_http_server_dies(sim, cls):
    p, url = start_http()
    try:
        async with MCPServer(url) as srv:
            sim.script(Reply(calls=[Call('add', {'a': 1, 'b': 1})]), Reply(text='ok'))
            chat = mk(cls, sim, GPT, tools=srv.tools)
            await ask(chat, 'Add.')
            p.kill(); p.wait()
            sim.script(Reply(calls=[Call('add', {'a': 1, 'b': 1})]), Reply(calls=[Call('add', {'a': 2, 'b': 2})]), Reply(text='Gone.'))
            await ask(chat, 'Again.')
            port = url.split(':')[2].split('/')[0]
            p, _ = start_http(int(port))    # back on the same port: the next call reaches it
            sim.script(Reply(calls=[Call('add', {'a': 3, 'b': 3})]), Reply(text='Back.'))
            await ask(chat, 'Once more.')
    finally: p.kill(); p.wait()
    died, unreachable, back = tool_texts(chat.hist)[1:]
    assert died.startswith('Error: the MCP server') and 'stopped during the call' in died, died
    assert unreachable.startswith(f"Error: can't connect to the MCP server `{url}`: ConnectError"), unreachable
    assert back == '6'
    accepted(sim, GPT)

def test_start_failure_says_why(tag):
    srv = MCPServer([sys.executable, '-c', f'import sys; sys.stderr.write("no config file {tag}\\n"); sys.exit(3)'])
    with pytest.raises(ConnectionError, match='no config file'): srv.open()
    with pytest.raises(ConnectionError, match="can't connect"): MCPServer('http://127.0.0.1:9/mcp', connect_timeout=5).open()

async def test_closed_server(sim, tag):
    async with stdio(tag) as srv: pass
    sim.script(Reply(calls=[Call('add', {'a': 1, 'b': 1})]), Reply(text='ok'))
    chat = mk(AsyncChat, sim, SONNET, tools=srv.tools)
    await chat('Add.')
    assert tool_texts(chat.hist) == [f"Error: the MCP server `{srv.name}` is closed"]

# ---------------------------------------------------------------- no process left behind

def test_no_process_after_with_or_exception(tag):
    with stdio(tag) as srv: assert procs(tag) == [int(srv.call('pid'))]
    assert procs(tag) == []
    with pytest.raises(ValueError):
        with stdio(tag) as srv:
            assert len(procs(tag)) == 1
            raise ValueError('boom')
    assert procs(tag) == []

async def test_no_process_after_async_with_or_exception(tag):
    async with stdio(tag) as srv: assert procs(tag) == [int(await srv.acall('pid'))]
    assert procs(tag) == []
    with pytest.raises(ValueError):
        async with stdio(tag): raise ValueError('boom')
    assert procs(tag) == []

def test_opened_without_with_is_closed_at_exit(tag):
    code = f"import sys; from lisette.mcp import MCPServer; s = MCPServer([sys.executable, {CALC!r}, {tag!r}]).open(); print(s.call('pid'))"
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().isdigit(), out.stderr
    assert procs(tag) == []

async def test_cancelled_async_chat_call(sim, tag, tmp_path):
    "Cancelling an AsyncChat call mid-tool leaves the server good for the next call; cancelling the block stops it"
    flag = tmp_path/'started'
    async def run(srv):
        sim.script(Reply(calls=[Call('slow', {'seconds': 60, 'flag': str(flag)})]), Reply(text='never'))
        chat = mk(AsyncChat, sim, SONNET, tools=srv.tools)
        task = asyncio.ensure_future(chat('Wait.'))
        await wait_until(flag.exists, 60)
        task.cancel()
        with pytest.raises(asyncio.CancelledError): await task
        return chat
    async with stdio(tag) as srv:
        chat = await run(srv)
        assert tool_texts(chat.hist) == [CANCELLED]
        pid = int(await srv.acall('pid'))
        assert procs(tag) == [pid]   # the same server, still good
    flag.unlink()
    async def block():
        async with stdio(tag) as srv:
            sim.reset(); sim.script(Reply(calls=[Call('slow', {'seconds': 60, 'flag': str(flag)})]), Reply(text='never'))
            await mk(AsyncChat, sim, SONNET, tools=srv.tools)('Wait.')
    task = asyncio.ensure_future(block())
    await wait_until(flag.exists, 60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError): await task
    assert procs(tag) == []

def test_ctrl_c_in_sync_chat(sim, tag, tmp_path):
    "Ctrl-C while a sync Chat waits for a server's tool: the call is answered as cancelled, the server stops"
    flag = tmp_path/'started'
    def interrupt():
        while not flag.exists(): threading.Event().wait(0.01)
        os.kill(os.getpid(), signal.SIGINT)
    threading.Thread(target=interrupt, daemon=True).start()
    sim.script(Reply(calls=[Call('slow', {'seconds': 60, 'flag': str(flag)})]), Reply(text='never'))
    with pytest.raises(KeyboardInterrupt):
        with stdio(tag) as srv:
            chat = mk(Chat, sim, GPT, tools=srv.tools)
            chat('Wait.')
    assert procs(tag) == []
    assert tool_texts(chat.hist) == [CANCELLED]
