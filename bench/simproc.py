"""The simulator for the benchmarks: `lisette.testing.Sim` with a router that picks each reply from the request,
run in a child process (the default) so that its server threads don't share the client's GIL, or in-process."""
import multiprocessing as mp, time

STREAM, TOOLS = 'bench:stream:', 'bench:tools:'
TEXT = 'Hello! This is a short, simulated answer from the benchmark.'

def _last_user_text(body)->str:
    "The text of the last user message of a request body (OpenAI or Anthropic format)"
    for m in reversed(body.get('messages') or []):
        if m.get('role') != 'user': continue
        c = m.get('content')
        if isinstance(c, str): return c
        for p in reversed(c or []):
            if isinstance(p, dict) and p.get('type') == 'text': return p.get('text') or ''
        return ''
    return ''

def _answered_tools(body)->bool:
    "Does the request end with tool results (OpenAI `tool` messages or Anthropic `tool_result` blocks)?"
    m = (body.get('messages') or [{}])[-1]
    if m.get('role') == 'tool': return True
    c = m.get('content')
    return isinstance(c, list) and any(isinstance(p, dict) and p.get('type') == 'tool_result' for p in c)

def route(body):
    "The `Reply` for a request: a stream of N chunks, N tool calls (then a text answer), or a short text"
    from lisette.testing import Reply, Call
    txt = _last_user_text(body)
    if txt.startswith(STREAM):
        n = int(txt[len(STREAM):].split()[0])
        return Reply(text=('word ' * n)[:4*n], chunks=n)
    if txt.startswith(TOOLS) and not _answered_tools(body):
        n = int(txt[len(TOOLS):].split()[0])
        return Reply(calls=[Call('nap', {'i': i}) for i in range(n)])
    return Reply(text=TEXT)

def _serve(conn):
    "The child process: serve until told to stop; answer `bodies`/`reset` requests over `conn`"
    from lisette.testing import Sim
    sim = Sim(default=route)
    conn.send((sim.openai_base, sim.anthropic_base))
    while True:
        cmd = conn.recv()
        if cmd == 'stop': break
        if cmd == 'bodies': conn.send(sim.bodies)
        elif cmd == 'reset': sim.reset(); conn.send(None)
    sim.close()

class SimProc:
    "`Sim(default=route)` in a spawned child process, with `openai_base`, `anthropic_base`, `bodies()`, `reset()`"
    def __init__(self, timeout:float=30):
        ctx = mp.get_context('spawn')
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child,), daemon=True)
        self.proc.start()
        self.openai_base, self.anthropic_base = self._recv(timeout)   # its imports: a few seconds, more on a loaded machine

    def _recv(self, timeout=60):
        "The child's answer; an error (not a hang) if it died, e.g. spawned from a script without a `__main__` guard"
        end = time.monotonic() + timeout
        while not self.conn.poll(0.1):
            if not self.proc.is_alive():
                raise RuntimeError(f'the simulator process is gone (exit code {self.proc.exitcode}); '
                                   'a script that starts it needs an `if __name__ == "__main__":` guard')
            if time.monotonic() > end: raise TimeoutError(f'the simulator process did not answer in {timeout} s')
        return self.conn.recv()
    def bodies(self)->list: self.conn.send('bodies'); return self._recv()
    def reset(self): self.conn.send('reset'); self._recv()
    def close(self):
        try: self.conn.send('stop')
        except (BrokenPipeError, OSError): pass
        self.proc.join(5)
        if self.proc.is_alive(): self.proc.terminate()
    def __enter__(self): return self
    def __exit__(self, *exc): self.close()

class SimInProc:
    "The same, in this process (server threads share the client's GIL)"
    def __init__(self):
        from lisette.testing import Sim
        self.sim = Sim(default=route)
        self.openai_base, self.anthropic_base = self.sim.openai_base, self.sim.anthropic_base
    def bodies(self)->list: return self.sim.bodies
    def reset(self): self.sim.reset()
    def close(self): self.sim.close()
    def __enter__(self): return self
    def __exit__(self, *exc): self.close()

def start(inproc:bool=False, timeout:float=30): return SimInProc() if inproc else SimProc(timeout)
