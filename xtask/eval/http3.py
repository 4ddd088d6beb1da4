"""A web client and server speaking HTTP/3 over QUIC on loopback (aioquic,
the QUIC and HTTP/3 library of Python's ecosystem): a benign look-alike of
libp2p over QUIC. Its Initial carries ALPN h3 and a server name; its bytes
are TLS-encrypted UDP like a libp2p node's. The client fetches a page every
200 ms. Usage: http3.py WORKDIR SECONDS"""
import asyncio
import os
import subprocess
import sys
import time

from aioquic.asyncio import connect, serve
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration

PAGE = b"<html><body>" + b"hello over http/3 " * 200 + b"</body></html>"


class Server(QuicConnectionProtocol):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.h3 = H3Connection(self._quic)

    def quic_event_received(self, event):
        for e in self.h3.handle_event(event):
            if isinstance(e, HeadersReceived):
                self.h3.send_headers(e.stream_id, [(b":status", b"200"), (b"content-type", b"text/html")])
                self.h3.send_data(e.stream_id, PAGE, end_stream=True)
        self.transmit()


class Client(QuicConnectionProtocol):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.h3 = H3Connection(self._quic)
        self.waiting = {}

    def quic_event_received(self, event):
        for e in self.h3.handle_event(event):
            if isinstance(e, DataReceived) and e.stream_ended:
                self.waiting.pop(e.stream_id).set_result(True)

    async def get(self, path):
        stream = self._quic.get_next_available_stream_id()
        self.h3.send_headers(
            stream,
            [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"localhost"), (b":path", path)],
            end_stream=True,
        )
        done = asyncio.get_running_loop().create_future()
        self.waiting[stream] = done
        self.transmit()
        await asyncio.wait_for(done, 5)


async def main(workdir, seconds):
    cert, key = os.path.join(workdir, "cert.pem"), os.path.join(workdir, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
        check=True, capture_output=True,
    )
    server_config = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
    server_config.load_cert_chain(cert, key)
    server = await serve("127.0.0.1", 0, configuration=server_config, create_protocol=Server)
    port = server._transport.get_extra_info("sockname")[1]
    client_config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name="localhost")
    client_config.load_verify_locations(cert)
    fetched = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        # A new connection now and then, as a browser opens them.
        async with connect("127.0.0.1", port, configuration=client_config, create_protocol=Client) as client:
            for _ in range(5):
                await client.get(b"/index.html")
                fetched += 1
                await asyncio.sleep(0.2)
    server.close()
    print("pages fetched", fetched)
    return fetched


sys.exit(0 if asyncio.run(main(sys.argv[1], float(sys.argv[2]))) > 10 else 1)
