"""A proof-of-work client: speaks Stratum v1 or XMRig's protocol to a pool and
hashes with scrypt (the py-scrypt package, Colin Percival's scrypt) on every
core, submitting shares. Usage: miner.py stratum|xmrig PORT SECONDS [PROCESS-NAME]"""
import json, multiprocessing, os, socket, sys, time
import scrypt

def hash_for(seconds, seed):
    end = time.time() + seconds
    n, best = 0, b"\xff" * 32
    while time.time() < end:
        h = scrypt.hash(seed + n.to_bytes(8, "little"), b"salt", N=1024, r=1, p=1, buflen=32)
        best = min(best, h)
        n += 1
    return n, best.hex()

def main():
    proto, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    if len(sys.argv) > 4:
        # Disguise: the thread name every tool shows (PR_SET_NAME = 15).
        import ctypes
        ctypes.CDLL(None).prctl(15, sys.argv[4].encode(), 0, 0, 0)
    s = socket.create_connection(("127.0.0.1", port))
    f = s.makefile("rwb")
    def call(obj):
        f.write((json.dumps(obj) + "\n").encode()); f.flush()
        return json.loads(f.readline())
    if proto == "stratum":
        call({"id": 1, "method": "mining.subscribe", "params": ["worker/1.0"]})
        f.readline()  # mining.notify
        call({"id": 2, "method": "mining.authorize", "params": ["wallet.rig1", "x"]})
    else:
        call({"id": 1, "jsonrpc": "2.0", "method": "login",
              "params": {"login": "48edfHu7V9Z84YzzMa6fUueoELZ9ZRXq9VetWzYGzKt52XU5xvqgzYnDK9URnRoJMk1j8nLwEVsaSWJ4fhdUyZijBGUicoD",
                         "pass": "x", "agent": "worker/1.0", "rigid": ""}})
    cores = os.cpu_count() or 1
    with multiprocessing.Pool(cores) as pool:
        rounds = max(1, int(seconds // 2))
        for r in range(rounds):
            results = pool.starmap(hash_for, [(seconds / rounds, bytes([r, c])) for c in range(cores)])
            for n, best in results:
                if proto == "stratum":
                    call({"id": 10 + r, "method": "mining.submit", "params": ["wallet.rig1", "job1", "00", "5e1f0000", best[:8]]})
                else:
                    call({"id": 10 + r, "jsonrpc": "2.0", "method": "submit",
                          "params": {"id": "miner1", "job_id": "1", "nonce": best[:8], "result": best}})
    s.close()

if __name__ == "__main__":
    main()
