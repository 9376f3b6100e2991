"""A small MCP server for lisette's tests and notebook, written with the `mcp` package's own server API.

`python calc.py [tag]` serves over stdio; `python calc.py http [port] [tag]` serves streamable HTTP on loopback,
on `port` (0 or none: a free one) and prints `PORT <n>` once it listens. `tag` is ignored: the tests put it in
the command line to find the process in the process table."""
import asyncio, base64, os, signal, socket, sys
from mcp.server.mcpserver import MCPServer, Image
from mcp.server.mcpserver.exceptions import ToolError

srv = MCPServer('calc', log_level='WARNING')
PNG = base64.b64decode('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==')

@srv.tool()
def add(a:int, b:int) -> int:
    "Add two integers"
    return a + b

@srv.tool()
def fail(why:str) -> str:
    "A tool that always fails, saying why"
    raise ToolError(f"it failed: {why}")

@srv.tool()
async def slow(seconds:float, flag:str='') -> str:
    "Wait `seconds`, then say so; a `flag` file, if named, is made when the wait begins"
    if flag: open(flag, 'w').close()
    await asyncio.sleep(seconds)
    return f'waited {seconds} s'

@srv.tool()
def pixel() -> Image:
    "A 1x1 PNG image"
    return Image(data=PNG, format='png')

@srv.tool()
def crash() -> str:
    "Kill this server at once, mid-call"
    os.kill(os.getpid(), signal.SIGKILL)

@srv.tool()
def pid() -> int:
    "This server's process id"
    return os.getpid()

async def serve_http(port:int):
    import uvicorn
    sock = socket.socket(); sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(('127.0.0.1', port)); sock.listen()
    print('PORT', sock.getsockname()[1], flush=True)
    server = uvicorn.Server(uvicorn.Config(srv.streamable_http_app(), log_level='warning'))
    await server.serve(sockets=[sock])

if __name__ == '__main__':
    if sys.argv[1:2] == ['http']: asyncio.run(serve_http(int(sys.argv[2]) if len(sys.argv) > 2 else 0))
    else: srv.run()
