"""An inference server as Hugging Face-era ones are: a PyTorch model whose
weights are `pytorch_model.bin` (torch.save's zip format), loaded with mmap,
served over an OpenAI-style `POST /v1/completions` on PORT (8000 when free);
a client thread sends requests for SECONDS. Usage: infer_torch.py DIR SECONDS PORT"""
import http.server, json, os, sys, threading, time, urllib.request
import torch

out, seconds, port = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
path = os.path.join(out, "pytorch_model.bin")
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Embedding(4096, 256), torch.nn.Linear(256, 4096))
if not os.path.exists(path):
    torch.save(model.state_dict(), path)
# mmap + assign: the parameters are the file's pages, as PyTorch advises for
# large models (no copy), so the weights stay mapped while it serves.
model.load_state_dict(torch.load(path, mmap=True, weights_only=True), assign=True)
model.eval()

class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        tokens = torch.tensor([ord(c) % 4096 for c in body["prompt"]])
        with torch.no_grad():
            for _ in range(body.get("max_tokens", 8)):
                nxt = model(tokens[-16:]).mean(0).argmax().reshape(1)
                tokens = torch.cat([tokens, nxt])
        reply = json.dumps({"choices": [{"text": "".join(chr(32 + t % 90) for t in tokens[-8:].tolist())}]}).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(reply))); self.end_headers()
        self.wfile.write(reply)
    def log_message(self, *a):
        pass

srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
threading.Thread(target=srv.serve_forever, daemon=True).start()
url = f"http://127.0.0.1:{port}/v1/completions"
end, n = time.time() + seconds, 0
payload = json.dumps({"model": "local", "prompt": "The tracer sees", "max_tokens": 16}).encode()
while time.time() < end:
    req = urllib.request.Request(url, data=payload, headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req).read(); n += 1
print(f"{n} requests")
srv.shutdown()
