"""An inference server: loads weights from a safetensors file and answers HTTP
POSTs with predictions; a client thread sends requests for SECONDS.
Usage: infer.py DIR SECONDS"""
import http.server, json, os, sys, threading, time, urllib.request
import numpy as np
from safetensors.numpy import load_file, save_file

out, seconds = sys.argv[1], float(sys.argv[2])
path = os.path.join(out, "served.safetensors")
if not os.path.exists(path):
    # 512 KiB of weights: as small as real checkpoints come (the Hugging
    # Face tiny test models are about this size); the first version of this
    # case served 10 KiB, below any real model.
    rng = np.random.default_rng(1)
    save_file({"w": rng.standard_normal((256, 512)).astype(np.float32)}, path)
w = load_file(path)["w"]

class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        x = np.array(json.loads(body), dtype=np.float32).reshape(-1, 256)
        reply = json.dumps((x @ w).argmax(1).tolist()).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(reply))); self.end_headers()
        self.wfile.write(reply)
    def log_message(self, *a):
        pass

srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
threading.Thread(target=srv.serve_forever, daemon=True).start()
url = f"http://127.0.0.1:{srv.server_address[1]}/predict"
end, n = time.time() + seconds, 0
payload = json.dumps(np.random.default_rng(2).standard_normal((64, 256)).tolist()).encode()
while time.time() < end:
    urllib.request.urlopen(urllib.request.Request(url, data=payload)).read(); n += 1
print(f"{n} requests")
srv.shutdown()
