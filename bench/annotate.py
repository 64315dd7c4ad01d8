"""Benchmark `ureca annotate` against the ideal for a chat server of fixed delay and capacity, with this
machine's cores busy and quiet, and annotate's own CPU per image beside it.

The server (an asyncio stub in this file, run in its own process) answers every chat request after ``--delay``
seconds and works on at most ``--capacity`` requests at once. We annotate ``--images`` tree records of
``--size`` photos (5 distinct generated images and trees, cycled under distinct image ids) with
``--concurrency`` equal to the capacity and compare with the ideal time:

    ideal = max(total requests / capacity, longest chain of dependent requests) x delay

(one request at a time, as the released code's HF path runs, takes total requests x delay).

Drawing the prompt pictures (blur, contour, crop, JPEG) is annotate's own CPU work; on a machine whose cores
are busy with other work it is what keeps the server waiting. So each setting is run with ``--load`` processes
spinning on the CPU (default: one per core; the figure then does not depend on what else the machine runs) and,
unless ``--no-quiet``, once more without them. Beside each run: annotate's CPU-seconds per image, its whole
process tree (this process, where requests are sent, plus the processes that draw: ``resource.getrusage``
of the process and of its reaped children, taken while the server and the spinners still run, so neither is
counted), and the stub server's own CPU.

``--max-side`` is annotate's (repeat it to compare settings in one run): ``auto`` is annotate's default (the size
InternVL's tiling keeps of each picture), ``0`` full size, ``N`` the longer side at most N pixels.

    .venv/bin/python bench/annotate.py                         # 50 images, delay 0.2 s, capacity 16, cores loaded + quiet
    .venv/bin/python bench/annotate.py --max-side auto --max-side 0 --no-quiet   # the default against full size
    .venv/bin/python bench/annotate.py --repeat 3 --no-quiet  # the spread of ours/ideal over 3 loaded runs
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def serve(delay: float, capacity: int) -> None:
    """Child process: an asyncio OpenAI-compatible stub that answers each chat request after ``delay``
    seconds, ``capacity`` at a time (the rest wait their turn). Prints its URL, serves until stdin closes,
    then prints how many requests it answered and the most it held at once."""
    import asyncio

    stats = {"requests": 0, "max_in_flight": 0}

    async def main() -> None:
        gate = asyncio.Semaphore(capacity)
        in_flight = 0

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal in_flight
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = 0
                    for line in head.split(b"\r\n"):
                        if line.lower().startswith(b"content-length:"):
                            length = int(line.split(b":", 1)[1])
                    if length:
                        await reader.readexactly(length)
                    if head.startswith(b"GET ") and b"/models" in head.split(b"\r\n", 1)[0]:
                        body = json.dumps({"object": "list", "data": [{"id": "bench", "object": "model"}]}).encode()
                        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                                     + str(len(body)).encode() + b"\r\n\r\n" + body)
                        await writer.drain()
                        continue
                    async with gate:
                        in_flight += 1
                        stats["max_in_flight"] = max(stats["max_in_flight"], in_flight)
                        await asyncio.sleep(delay)
                        in_flight -= 1
                    stats["requests"] += 1
                    body = json.dumps({"choices": [{"index": 0, "message": {
                        "role": "assistant", "content": f"a caption for request {stats['requests']}"}}]}).encode()
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                                 + str(len(body)).encode() + b"\r\n\r\n" + body)
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=512)
        port = server.sockets[0].getsockname()[1]
        print(f"http://127.0.0.1:{port}/v1", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        ru = resource.getrusage(resource.RUSAGE_SELF)
        stats["cpu"] = ru.ru_utime + ru.ru_stime
        print(json.dumps(stats), flush=True)
        os._exit(0)  # open keep-alive connections need no goodbye

    asyncio.run(main())


def _cpu(who: int) -> float:
    ru = resource.getrusage(who)
    return ru.ru_utime + ru.ru_stime


def spin_up(n: int) -> list[subprocess.Popen]:
    """``n`` processes that keep one core each busy until killed."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def spin_down(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.kill()
    for p in procs:
        p.wait()


def max_side_value(text: str) -> int | None:
    """``auto`` -> None (annotate's default), else the number (0: full size)."""
    return None if text == "auto" else int(text)


def one_run(trees: Path, out: Path, args: argparse.Namespace, max_side: int | None, load: int) -> dict:
    """Annotate ``trees`` once against a fresh stub server, with ``load`` spinning processes; returns the figures."""
    from ureca_cli.curate.annotate import AnnotateConfig, Annotator, run
    from ureca_cli.mllm import make_backend
    from ureca_cli.stream import StreamConfig
    from ureca_cli.visual.prompter import VisualSettings

    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--delay", str(args.delay), "--capacity", str(args.capacity)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    spinners: list[subprocess.Popen] = []
    try:
        url = child.stdout.readline().strip()
        backend = make_backend("openai", base_urls=[url], model="bench", concurrency=args.capacity)
        cfg = AnnotateConfig(visual=VisualSettings.for_max_side(max_side), images_in_flight=args.images_in_flight,
                             prepare_workers=args.prepare_workers)
        spinners = spin_up(load)
        time.sleep(0.2 if load else 0)  # let them take their cores
        self0, kids0 = _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN)
        start = time.monotonic()
        summary = run(trees, Annotator(backend, cfg), StreamConfig(output=out, progress=False))
        wall = time.monotonic() - start
        # the drawing processes are reaped when the run closes; the server and the spinners are still running
        main_cpu, workers_cpu = _cpu(resource.RUSAGE_SELF) - self0, _cpu(resource.RUSAGE_CHILDREN) - kids0
        loadavg = os.getloadavg()[0]
        backend.close()
    finally:
        spin_down(spinners)
        child.stdin.close()
        stats = json.loads(child.stdout.readline() or "{}")
        child.wait(timeout=30)
    assert summary.written_items == args.images, summary
    return {"wall": wall, "main": main_cpu, "workers": workers_cpu, "server": stats.get("cpu", float("nan")),
            "requests": stats.get("requests"), "max_in_flight": stats.get("max_in_flight"), "loadavg": loadavg,
            "bytes": out.stat().st_size}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=50)
    ap.add_argument("--delay", type=float, default=0.2)
    ap.add_argument("--capacity", type=int, default=16)
    ap.add_argument("--max-side", action="append", default=None, metavar="auto|0|N",
                    help="annotate's --max-side; repeat it to compare (default: auto, annotate's default)")
    ap.add_argument("--load", type=int, default=os.cpu_count() or 1,
                    help="processes spinning on the CPU during the loaded runs (default: one per core; 0: none)")
    ap.add_argument("--no-quiet", action="store_true", help="skip the runs without load")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each setting and condition (the spread is shown)")
    ap.add_argument("--images-in-flight", type=int, default=None)
    ap.add_argument("--prepare-workers", type=int, default=None)
    ap.add_argument("--size", default="1500x2250", help="image size WxH")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.delay, args.capacity)
        return

    from tests.servers.trees import make_image, make_tree_record
    from ureca_cli.curate.annotate import count_requests, plan_record

    sides = args.max_side or ["auto"]
    conditions = ([args.load] if args.load > 0 else []) + ([] if args.no_quiet and args.load > 0 else [0])
    w, h = (int(v) for v in args.size.split("x"))
    results: dict[tuple[str, int], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        t0 = time.monotonic()
        bases = []
        for i in range(5):
            img = make_image(tmpd / f"photo{i}.jpg", w, h, seed=i)
            bases.append(make_tree_record(img, w, h, image_id=f"photo{i}", mains=2, fanout=(3, 2), seed=i))
        recs = []
        for k in range(args.images):
            rec = json.loads(json.dumps(bases[k % len(bases)]))
            rec["image_id"] = f"img{k:03d}"
            recs.append(rec)
        trees = tmpd / "trees.jsonl"
        trees.write_text("".join(json.dumps(r) + "\n" for r in recs))
        total, chain = 0, 0
        for r in recs:
            t, c = count_requests(plan_record(json.loads(json.dumps(r)), "bench"))
            total, chain = total + t, max(chain, c)
        nodes = sum(1 for r in recs for n in r["nodes"] if n["role"] != "dropped")
        print(f"setup: {args.images} tree records of {w}x{h} images, {nodes} regions, {total} requests, "
              f"longest chain {chain} ({time.monotonic() - t0:.1f} s to generate)", file=sys.stderr)
        for rep in range(args.repeat):
            for side in sides:
                for load in conditions:
                    r = one_run(trees, tmpd / "out.jsonl", args, max_side_value(side), load)
                    assert r["requests"] == total, (r, total)
                    results.setdefault((side, load), []).append(r)
                    print(f"run {rep + 1}: max-side {side}, load {load}: {r['wall']:.1f} s", file=sys.stderr)

    ideal = max(total / args.capacity, chain) * args.delay
    serial = total * args.delay
    n = args.images

    def med(runs: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    names = {"auto": "default (tiles)", "0": "full size"}
    cols = [(f"max-side {names.get(side, side)}", f"{'cores loaded (' + str(load) + ' spinning)' if load else 'quiet'}",
             runs) for (side, load), runs in results.items()]
    rows: list[tuple[str, list[str]]] = [
        ("ours (wall)", [f"{med(rs, 'wall'):.1f} s" for *_, rs in cols]),
        ("ours / ideal  (target <= 1.25x loaded)", [f"{med(rs, 'wall') / ideal:.2f}x" for *_, rs in cols]),
        ("  spread over runs", [" ".join(f"{r['wall'] / ideal:.2f}" for r in rs) for *_, rs in cols]),
        ("annotate CPU-s per image (process tree)",
         [f"{(med(rs, 'main') + med(rs, 'workers')) / n:.3f}" for *_, rs in cols]),
        ("  sending process / drawing processes",
         [f"{med(rs, 'main') / n:.3f} / {med(rs, 'workers') / n:.3f}" for *_, rs in cols]),
        ("stub server CPU-s per image", [f"{med(rs, 'server') / n:.3f}" for *_, rs in cols]),
        ("server max in flight seen", [f"{max(r['max_in_flight'] for r in rs)}" for *_, rs in cols]),
        ("load average at the end", [f"{med(rs, 'loadavg'):.1f}" for *_, rs in cols]),
    ]
    print(f"bench/annotate.py: {n} images {w}x{h}, {total} requests (phrases + paragraphs), longest chain {chain}; "
          f"server {args.delay * 1000:.0f} ms, {args.capacity} at once; {os.cpu_count()} CPUs")
    print(f"  ideal: max(requests/capacity, chain) x delay = {ideal:.1f} s; one request at a time (released HF path) "
          f"= {serial:.1f} s")
    width = max(len(k) for k, _ in rows)
    colw = [max(len(a), len(b), *(len(v[i]) for _, v in rows)) for i, (a, b, _) in enumerate(cols)]
    print(f"  {'':<{width}}  " + "  ".join(f"{a:<{colw[i]}}" for i, (a, _, _) in enumerate(cols)))
    print(f"  {'':<{width}}  " + "  ".join(f"{b:<{colw[i]}}" for i, (_, b, _) in enumerate(cols)))
    for k, vals in rows:
        print(f"  {k:<{width}}  " + "  ".join(f"{v:<{colw[i]}}" for i, v in enumerate(vals)))


if __name__ == "__main__":
    main()
