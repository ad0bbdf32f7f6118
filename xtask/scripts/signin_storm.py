"""1,000 concurrent wrong-password sign-ins for unknown emails, each from its own loopback
address (so no per-address limit applies), while the gateway's RSS is sampled."""
import asyncio, json, sys, time, os

PORT = int(sys.argv[1]); PID = int(sys.argv[2]); N = int(sys.argv[3]) if len(sys.argv) > 3 else 1000

def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0

async def one(i, counts):
    src = f"127.0.{1 + i // 250}.{1 + i % 250}"
    body = json.dumps({"email": f"nobody{i}@example.com", "password": "wrong"}).encode()
    try:
        r, w = await asyncio.open_connection("127.0.0.1", PORT, local_addr=(src, 0))
        w.write(b"POST /api/v1/auths/signin HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        await w.drain()
        data = await r.read()
        status = data.split(b" ", 2)[1].decode() if data else "none"
        w.close()
    except Exception as e:
        status = type(e).__name__
    counts[status] = counts.get(status, 0) + 1

async def main():
    idle = rss_mib(PID)
    peak = idle
    counts = {}
    done = False
    async def sample():
        nonlocal peak
        while not done:
            peak = max(peak, rss_mib(PID))
            await asyncio.sleep(0.02)
    s = asyncio.create_task(sample())
    t0 = time.time()
    await asyncio.gather(*(one(i, counts) for i in range(N)))
    done = True
    await s
    await asyncio.sleep(1)
    after = rss_mib(PID)
    print(json.dumps({"n": N, "idle_mib": round(idle, 1), "peak_mib": round(peak, 1), "after_mib": round(after, 1),
                      "seconds": round(time.time() - t0, 2), "statuses": counts}))

asyncio.run(main())
