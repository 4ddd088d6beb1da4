#!/usr/bin/env python3
"""Runs tracer-relay.conf for real, on loopback, and checks what it does.

A copy of the configuration with its paths moved to a temporary directory and
its ports to free loopback ports is started with `rsyslogd -n`; a stand-in
collector listens where the alerts are forwarded to. Records are sent framed
exactly as the tracer's syslog sink frames them (RFC 5424, octet counting),
one of them close to the 256k limit. Checks: relay.jsonl holds each record's
JSON line byte for byte, and the collector received the classification
records, and only those, with MSGID classification and the JSON as MSG.

Usage: python3 examples/rsyslog/try-relay.py   (needs rsyslogd; no root)
Exits 0 when every check passes. Stops everything it started.
"""
import json, os, re, select, signal, socket, subprocess, sys, tempfile, threading, time

CONF = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tracer-relay.conf")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def collector(sock, got, stop):
    """Accepts connections and splits octet-counted frames into `got`."""
    conns, bufs = [], {}
    while not stop.is_set():
        ready, _, _ = select.select([sock] + conns, [], [], 0.1)
        for s in ready:
            if s is sock:
                c, _ = sock.accept()
                conns.append(c)
                bufs[c] = b""
                continue
            data = s.recv(1 << 20)
            if not data:
                conns.remove(s)
                s.close()
                continue
            bufs[s] += data
            while b" " in bufs[s]:
                length, _, rest = bufs[s].partition(b" ")
                if len(rest) < int(length):
                    break
                got.append(rest[: int(length)].decode())
                bufs[s] = rest[int(length):]


def frame(record):
    """The tracer's message: <PRI>1 TIME HOST tracer PID KIND - JSON, octet-counted."""
    kind = record["kind"]
    alert = kind == "classification" and record["classification"]["alert"]
    severity = 4 if alert else 5 if kind == "classification" else 6
    main, frac = record["time"].split(".")
    line = json.dumps(record, separators=(",", ":"))
    msg = f"<{16 * 8 + severity}>1 {main}.{frac[:6]}Z {record['host']} tracer 4242 {kind} - {line}".encode()
    return f"{len(msg)} ".encode() + msg, line


def main():
    tmp = tempfile.mkdtemp(prefix="tracer-relay-")
    in_port, out_port = free_port(), free_port()
    text = open(CONF).read()
    text = text.replace("/var/spool/rsyslog-tracer", f"{tmp}/spool")
    text = text.replace("/var/log/tracer/relay.jsonl", f"{tmp}/relay.jsonl")
    text = re.sub(r'target="[^"]*" port="\d+"', f'target="127.0.0.1" port="{out_port}"', text)
    text = re.sub(r'(input\(type="imtcp"[^)]*port=")\d+', rf"\g<1>{in_port}", text)
    os.mkdir(f"{tmp}/spool")
    with open(f"{tmp}/relay.conf", "w") as f:
        f.write(text)

    host = {"schema": "tracer.v1", "host": "vm", "mono_ns": 1}
    records = [
        dict(host, kind="process.exec", time="2026-11-21T18:41:34.212761124Z",
             process={"pid": 14132, "comm": "curl", "argv": ["curl", "-s", "caf\u00e9", "tab\there"]}),
        dict(host, kind="classification", time="2026-11-21T19:39:24.649057144Z",
             classification={"alert": True, "category": "crypto_mining", "confidence": 0.969}),
        dict(host, kind="process.activity", time="2026-11-21T19:31:30.782192300Z", pad="x" * 250_000),
        dict(host, kind="classification", time="2026-11-21T19:40:00.000000001Z",
             classification={"alert": False, "category": "ai_training", "confidence": 0.5}),
    ]

    sock = socket.socket()
    sock.bind(("127.0.0.1", out_port))
    sock.listen(4)
    got, stop = [], threading.Event()
    listener = threading.Thread(target=collector, args=(sock, got, stop), daemon=True)
    listener.start()
    log = open(f"{tmp}/rsyslogd.log", "w")
    relay = subprocess.Popen(["rsyslogd", "-n", "-f", f"{tmp}/relay.conf", "-i", f"{tmp}/rsyslogd.pid"],
                             stdout=log, stderr=subprocess.STDOUT)
    ok = True
    try:
        deadline = time.time() + 10
        while True:
            try:
                sender = socket.create_connection(("127.0.0.1", in_port), timeout=1)
                break
            except OSError:
                if time.time() > deadline or relay.poll() is not None:
                    raise SystemExit(f"rsyslogd did not start; see {tmp}/rsyslogd.log")
                time.sleep(0.2)
        lines = []
        for r in records:
            data, line = frame(r)
            sender.sendall(data)
            lines.append(line)
        sender.close()
        alerts = [l for l, r in zip(lines, records) if r["kind"] == "classification"]
        deadline = time.time() + 10
        while time.time() < deadline:
            written = open(f"{tmp}/relay.jsonl").read().splitlines() if os.path.exists(f"{tmp}/relay.jsonl") else []
            if len(written) >= len(lines) and len(got) >= len(alerts):
                break
            time.sleep(0.2)

        def check(what, passed):
            nonlocal ok
            ok &= passed
            print(("ok   " if passed else "FAIL ") + what)

        check(f"relay.jsonl holds the {len(lines)} JSON lines byte for byte (largest {max(map(len, lines))} bytes)",
              written == lines)
        check("relay.jsonl is mode 0600", os.stat(f"{tmp}/relay.jsonl").st_mode & 0o777 == 0o600)
        check(f"the collector got the {len(alerts)} classification records and nothing else",
              [g.split(" - ", 1)[1] for g in got] == alerts)
        check("forwarded with APP-NAME tracer and MSGID classification",
              all(g.split(" ")[3] == "tracer" and g.split(" ")[5] == "classification" for g in got))
    finally:
        relay.send_signal(signal.SIGTERM)
        relay.wait(timeout=30)
        stop.set()
        listener.join()
        sock.close()
    print(f"(files in {tmp})")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
