"""A small asyncio mock upstream for paced OpenAI SSE streams: `POST /paced/<chunks>/<interval_ms>/v1/chat/completions`.

nginx serves the canned (unpaced) answers; paced streams need a server that
sleeps between chunks without a thread per stream, so hundreds stay cheap.
Run: `python bench/paced_upstream.py PORT` (prints "ready" when listening).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import List

CREATED = 1763800000


def sse_chunks(n: int) -> List[bytes]:
    def chunk(delta: object, finish: object = None, usage: object = None) -> bytes:
        body = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": CREATED, "model": "bench",
                "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]}
        if usage is not None:
            body["usage"] = usage
        return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"

    out = [chunk({"role": "assistant", "content": "tok0 "})]
    out += [chunk({"content": f"tok{i} "}) for i in range(1, n)]
    out.append(chunk({}, "stop") + chunk(None, usage={"prompt_tokens": 8, "completion_tokens": n, "total_tokens": 8 + n})
               + b"data: [DONE]\n\n")
    return out


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
            length = int(headers.get("content-length") or 0)
            if length:
                await reader.readexactly(length)
            parts = path.strip("/").split("/")
            if method != "POST" or len(parts) < 3 or parts[0] != "paced":
                writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
                continue
            n, interval = int(parts[1]), int(parts[2]) / 1000.0
            close = headers.get("connection", "").lower() == "close"
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
                         + (b"Connection: close\r\n" if close else b"") + b"\r\n")
            for i, data in enumerate(sse_chunks(n)):
                if i:
                    await asyncio.sleep(interval)
                writer.write(b"%x\r\n%s\r\n" % (len(data), data))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            if close:
                break
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main(int(sys.argv[1])))
    except KeyboardInterrupt:
        pass
