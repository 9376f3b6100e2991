"""Where lisette's extra time goes in one benchmark case: cProfile `n` raw runs and `n` lisette runs, interleaved (the
profiler's overhead is in both), then print per run the functions whose own time lisette adds, and
lisette's own functions by cumulative time. `python -m bench.profile CASE [-n 30] [--top 25] [--quick]`, CASE being
a part of a case name, e.g. '8 sync tools', '800-message', 'AsyncChat (openai)'."""
import argparse, asyncio, cProfile, gc, pstats, sys
from pathlib import Path

if __package__ in (None, ''): sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.run import cases, FULL, QUICK
from bench.simproc import start

def _where(k):
    f, line, fn = k
    for cut in ('site-packages/', 'lib/python3.', '/work/main/'):
        if cut in f: f = f.split(cut, 1)[1]
    return f'{f}:{line}({fn})'

def per_run(prof, n)->dict:
    "{function: (calls, own seconds, cumulative seconds)} per run"
    return {k: (v[1]/n, v[2]/n, v[3]/n) for k, v in pstats.Stats(prof).stats.items()}

def _profile(case, n):
    "Per-run profiles of the raw and the lisette side, runs interleaved (sync cases outside any event loop)"
    prep = case.prep or (lambda: None)
    profs = {'raw': cProfile.Profile(), 'lisette': cProfile.Profile()}
    sides = lambda i: [('raw', case.raw), ('lisette', case.lis)][::1 if i % 2 == 0 else -1]
    async def go():
        await case.raw(); prep(); await case.lis()
        gc.collect(); gc.freeze()
        for i in range(n):
            for k, f in sides(i):
                if k == 'lisette': prep()
                profs[k].enable(); await f(); profs[k].disable()
    def go_sync():
        case.raw(); case.lis()
        gc.collect(); gc.freeze()
        for i in range(n):
            for k, f in sides(i): profs[k].enable(); f(); profs[k].disable()
    go_sync() if case.sync else asyncio.run(go())
    return {k: per_run(p, n) for k, p in profs.items()}

def report(profs, top=25):
    raw, lis = profs['raw'], profs['lisette']
    waits = ('poll', 'select', 'sleep')   # the event loop's or a thread's idle waits are not CPU
    tot = {k: sum(v[1] for f, v in d.items() if not (f[0] == '~' and any(w in f[2] for w in waits))) for k, d in profs.items()}
    print(f"time under the profiler (idle waits left out), per run: raw {tot['raw']*1e3:.2f} ms, lisette {tot['lisette']*1e3:.2f} ms "
          f"(+{(tot['lisette']-tot['raw'])*1e3:.2f} ms, x{tot['lisette']/tot['raw']:.3f})\n")
    diff = sorted(((lis.get(k, (0, 0, 0))[1] - raw.get(k, (0, 0, 0))[1], k) for k in set(raw) | set(lis)), reverse=True)
    print(f"own time lisette adds, per run (top {top}):\n{'extra us':>9} {'calls L/R':>11}  function")
    for d, k in diff[:top]:
        print(f"{d*1e6:9.1f} {lis.get(k, (0,))[0]:>5.0f}/{raw.get(k, (0,))[0]:<5.0f}  {_where(k)}")
    mine = sorted(((v[2], k) for k, v in lis.items() if '/lisette/' in k[0] or 'fastcore' in k[0]), reverse=True)
    print(f"\nlisette's (and fastcore's) functions by cumulative time per run:\n{'cum us':>9} {'calls':>6}  function")
    for c, k in mine[:top]: print(f"{c*1e6:9.1f} {lis[k][0]:>6.0f}  {_where(k)}")

def main(argv=None):
    ap = argparse.ArgumentParser(prog='python -m bench.profile', description=__doc__)
    ap.add_argument('case', help='a part of the case name')
    ap.add_argument('-n', type=int, default=30)
    ap.add_argument('--top', type=int, default=25)
    ap.add_argument('--quick', action='store_true', help="the quick mode's sizes")
    a = ap.parse_args(argv)
    with start() as sim:
        cs = [c for c in cases(sim, QUICK if a.quick else FULL) if a.case.lower() in c.name.lower()]
        if not cs: sys.exit(f'no case matches {a.case!r}')
        print(f'case: {cs[0].name}; {a.n} runs a side\n')
        report(_profile(cs[0], a.n), a.top)

if __name__ == '__main__': main()
