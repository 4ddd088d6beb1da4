"""A real RandomX miner: hashes with the reference implementation (Debian's
librandomx0, tevador/RandomX, through ctypes; the library releases the GIL,
so threads hash in parallel) in light mode (its 256 MiB cache, its JIT), and
speaks to a CryptoNote pool as XMRig does: a `login` with XMRig's field order
and algorithm list, then a `submit` per share found. Writes DIR/first-hash (the
CLOCK_MONOTONIC time of its first hash).

Usage: randomx_miner.py MODE PORT SECONDS THREADS DIR [PROCESS-NAME]
  MODE plain   a pool on 127.0.0.1:PORT
       tls     the same over TLS, to the address, with no SNI (XMRig's
               default; Python's ssl is OpenSSL 3.0, as XMRig's releases)
       offline no network at all (XMRig's --bench); PORT is ignored
"""
import ctypes, json, socket, ssl, sys, threading, time

ADDRESS = "48W8eVd8EikDRWMgg7qePZgyrCu5hBhobNGkgor38vjxDC21ed7DuUQcDjwJurFWQeA722XTnfhv76Cpr4ECqHaFRoi7A9Q"
AGENT = "XMRig/6.18.1 (Linux x86_64) libuv/1.44.1 gcc/5.4.0"
ALGOS = ["rx/0", "cn/1", "cn/2", "cn/r", "cn/fast", "cn/half", "cn/xao", "cn/rto", "cn/rwz", "cn/zls",
         "cn/double", "cn/ccx", "cn-lite/0", "cn-lite/1", "cn-heavy/0", "cn-heavy/tube", "cn-heavy/xhv",
         "cn-pico", "cn-pico/tlo", "cn/upx2", "cn/0", "rx/wow", "rx/arq", "rx/graft", "rx/sfx", "rx/keva",
         "argon2/chukwa", "argon2/chukwav2", "argon2/ninja", "ghostrider"]

rx = ctypes.CDLL("librandomx.so.0")
rx.randomx_get_flags.restype = ctypes.c_int
rx.randomx_alloc_cache.restype = ctypes.c_void_p
rx.randomx_alloc_cache.argtypes = [ctypes.c_int]
rx.randomx_init_cache.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
rx.randomx_create_vm.restype = ctypes.c_void_p
rx.randomx_create_vm.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
rx.randomx_calculate_hash.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p]


def send(f, obj):
    # One compact line per message, as rapidjson writes it; one write.
    f.write((json.dumps(obj, separators=(",", ":")) + "\n").encode())
    f.flush()


def main():
    mode, port, seconds, threads = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    mark = sys.argv[5] + "/first-hash"
    if len(sys.argv) > 6:
        # Disguise: the thread name every tool shows (PR_SET_NAME = 15).
        ctypes.CDLL(None).prctl(15, sys.argv[6].encode(), 0, 0, 0)
    f, blob = None, bytes(76)
    if mode != "offline":
        sock = socket.create_connection(("127.0.0.1", port))
        if mode == "tls":
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            sock = ctx.wrap_socket(sock)  # no server_hostname: no SNI
        f = sock.makefile("rwb")
        send(f, {"id": 1, "jsonrpc": "2.0", "method": "login",
                 "params": {"login": ADDRESS, "pass": "x", "agent": AGENT, "algo": ALGOS}})
        job = json.loads(f.readline())["result"]["job"]
        blob = bytes.fromhex(job["blob"])
    flags = rx.randomx_get_flags()  # JIT and hardware AES where the CPU has them
    cache = rx.randomx_alloc_cache(flags)
    if not cache:
        sys.exit("randomx_alloc_cache failed")
    rx.randomx_init_cache(cache, b"eval seed hash", 14)
    lock, shares, end = threading.Lock(), [], time.time() + seconds

    def worker(t):
        vm = rx.randomx_create_vm(flags, cache, None)
        out = ctypes.create_string_buffer(32)
        n = 0
        while time.time() < end:
            data = blob[:39] + (t << 24 | n).to_bytes(4, "little") + blob[43:]
            rx.randomx_calculate_hash(vm, data, len(data), out)
            if n == 0 and t == 0:
                # For the eval: when mining began (CLOCK_MONOTONIC, the
                # tracer's clock), to time the verdict from.
                with open(mark, "w") as f_mark:
                    f_mark.write(str(time.monotonic_ns()))
            n += 1
            if out.raw[31] < 8:  # a share at this eval's difficulty
                with lock:
                    shares.append(((t << 24 | n).to_bytes(4, "little").hex(), out.raw.hex()))

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for w in pool:
        w.start()
    sent = 0
    while any(w.is_alive() for w in pool):
        time.sleep(0.5)
        with lock:
            todo, shares[:] = list(shares), []
        for nonce, result in todo:
            if f is not None:
                sent += 1
                send(f, {"id": 10 + sent, "jsonrpc": "2.0", "method": "submit",
                         "params": {"id": "miner1", "job_id": "1", "nonce": nonce, "result": result}})
                f.readline()
    for w in pool:
        w.join()


if __name__ == "__main__":
    main()
