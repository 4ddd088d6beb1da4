"""A mining pool simulator on loopback: answers Stratum v1 (mining.subscribe,
mining.authorize, mining.submit) and XMRig/CryptoNote (login, submit,
keepalived) with jobs, and accepts every share. With LOG, appends one line per
login and per share, so the eval knows a miner really mined. With CERT and
KEY, it speaks TLS (as pools do on their TLS ports).
Usage: pool.py PORT [LOG [CERT KEY]]"""
import json, socket, ssl, sys, threading

LOG = sys.argv[2] if len(sys.argv) > 2 else None
lock = threading.Lock()

def log(what):
    if LOG:
        with lock, open(LOG, "a") as f:
            f.write(f"{sys.argv[1]} {what}\n")

def serve(conn):
    f = conn.makefile("rwb")
    for line in f:
        try:
            msg = json.loads(line)
        except ValueError:
            break
        method, mid = msg.get("method"), msg.get("id")
        if method in ("mining.subscribe", "login"):
            log("login")
        elif method in ("mining.submit", "submit"):
            log("share")
        if method == "mining.subscribe":
            reply = {"id": mid, "result": [[["mining.notify", "1"]], "08000002", 4], "error": None}
            f.write((json.dumps(reply) + "\n").encode())
            notify = {"id": None, "method": "mining.notify",
                      "params": ["job1", "00" * 32, "01", "02", [], "20000000", "1d00ffff", "5e1f0000", True]}
            f.write((json.dumps(notify) + "\n").encode())
        elif method == "login":
            job = {"blob": "07" * 38, "job_id": "1", "target": "b88d0600", "algo": "rx/0"}
            reply = {"id": mid, "jsonrpc": "2.0", "result": {"id": "miner1", "job": job, "status": "OK"}}
            f.write((json.dumps(reply) + "\n").encode())
        else:
            f.write((json.dumps({"id": mid, "result": True, "error": None}) + "\n").encode())
        f.flush()
    conn.close()

sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", int(sys.argv[1])))
sock.listen(16)
tls = None
if len(sys.argv) > 4:
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(sys.argv[3], sys.argv[4])

def accept(c):
    if tls is not None:
        try:
            c = tls.wrap_socket(c, server_side=True)
        except (ssl.SSLError, OSError):
            c.close()
            return
    serve(c)

while True:
    c, _ = sock.accept()
    threading.Thread(target=accept, args=(c,), daemon=True).start()
