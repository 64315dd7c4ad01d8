"""Benchmark `ureca annotate` scheduling against a loopback chat server with a fixed delay and capacity.

The server (an asyncio stub in this file, run in its own process) answers every chat request after ``--delay``
seconds and works on at most ``--capacity`` requests at once. We annotate ``--images`` tree records of
1500x2250 photos (5 distinct generated images and trees, cycled under distinct image ids) with
``--concurrency`` equal to the capacity and compare with the ideal time:

    ideal = max(total requests / capacity, longest chain of dependent requests) x delay

(one request at a time, as the released code's HF path runs, takes total requests x delay).

    .venv/bin/python bench/annotate.py            # 50 images, delay 0.2 s, capacity 16
    .venv/bin/python bench/annotate.py --images 20 --capacity 8
"""

from __future__ import annotations

import argparse
import json
import os
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
        print(json.dumps(stats), flush=True)
        os._exit(0)  # open keep-alive connections need no goodbye

    asyncio.run(main())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=50)
    ap.add_argument("--delay", type=float, default=0.2)
    ap.add_argument("--capacity", type=int, default=16)
    ap.add_argument("--max-side", type=int, default=None)
    ap.add_argument("--images-in-flight", type=int, default=None)
    ap.add_argument("--prepare-workers", type=int, default=None)
    ap.add_argument("--size", default="1500x2250", help="image size WxH")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.delay, args.capacity)
        return

    from tests.servers.trees import make_image, make_tree_record
    from ureca_cli.curate.annotate import AnnotateConfig, Annotator, count_requests, plan_record, run
    from ureca_cli.mllm import make_backend
    from ureca_cli.stream import StreamConfig
    from ureca_cli.visual.prompter import VisualSettings

    w, h = (int(v) for v in args.size.split("x"))
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

        child = subprocess.Popen(
            [sys.executable, __file__, "--serve", "--delay", str(args.delay), "--capacity", str(args.capacity)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        try:
            url = child.stdout.readline().strip()
            backend = make_backend("openai", base_urls=[url], model="bench", concurrency=args.capacity)
            cfg = AnnotateConfig(visual=VisualSettings(max_side=args.max_side), images_in_flight=args.images_in_flight,
                                 prepare_workers=args.prepare_workers)
            out = tmpd / "out.jsonl"
            cpu0 = time.process_time()
            start = time.monotonic()
            summary = run(trees, Annotator(backend, cfg), StreamConfig(output=out, progress=False))
            ours = time.monotonic() - start
            cpu = time.process_time() - cpu0
            import resource
            backend.close()
            kids = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu_workers = kids.ru_utime + kids.ru_stime  # image-drawing processes (and the stub server)
        finally:
            child.stdin.close()
            stats = json.loads(child.stdout.readline() or "{}")
            child.wait(timeout=30)
        assert summary.written_items == args.images, summary
        assert stats.get("requests") == total, (stats, total)

    ideal = max(total / args.capacity, chain) * args.delay
    serial = total * args.delay
    rows = [
        ("images", f"{args.images}"),
        ("requests (phrases + paragraphs)", f"{total}"),
        ("longest dependent chain", f"{chain} requests"),
        ("server delay / capacity", f"{args.delay * 1000:.0f} ms / {args.capacity} at once"),
        ("server max in flight seen", f"{stats.get('max_in_flight')}"),
        ("one request at a time (released HF path)", f"{serial:.1f} s"),
        ("ideal: max(requests/capacity, chain) x delay", f"{ideal:.1f} s"),
        ("ours (wall)", f"{ours:.1f} s"),
        ("ours (CPU: this process / child processes)", f"{cpu:.1f} s / {cpu_workers:.1f} s"),
        ("floor from our CPU work alone, all cores free", f"{(cpu + cpu_workers) / (os.cpu_count() or 1):.1f} s"),
        ("ours / ideal", f"{ours / ideal:.2f}x (target <= 1.25x)"),
        ("one-at-a-time / ours", f"{serial / ours:.1f}x"),
    ]
    width = max(len(k) for k, _ in rows)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"bench/annotate.py ({w}x{h}, max-side {args.max_side or 'none'}, {os.cpu_count()} CPUs, "
          f"load average {load:.1f} at the end)")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")


if __name__ == "__main__":
    main()
