"""A training loop: loads a safetensors checkpoint, trains a two-layer network
with numpy on synthetic data for SECONDS, saves checkpoints. Usage:
train.py DIR SECONDS"""
import os, sys, time
import numpy as np
from safetensors.numpy import load_file, save_file

out, seconds = sys.argv[1], float(sys.argv[2])
ckpt = os.path.join(out, "model.safetensors")
rng = np.random.default_rng(0)
if not os.path.exists(ckpt):
    save_file({"w1": rng.standard_normal((256, 512)).astype(np.float32),
               "w2": rng.standard_normal((512, 10)).astype(np.float32)}, ckpt)
weights = load_file(ckpt)
w1, w2 = weights["w1"], weights["w2"]
x = rng.standard_normal((4096, 256)).astype(np.float32)
y = rng.integers(0, 10, 4096)
end, step = time.time() + seconds, 0
while time.time() < end:
    h = np.maximum(x @ w1, 0)
    logits = h @ w2
    p = np.exp(logits - logits.max(1, keepdims=True)); p /= p.sum(1, keepdims=True)
    p[np.arange(len(y)), y] -= 1
    gw2 = h.T @ p / len(y); gh = p @ w2.T; gh[h <= 0] = 0; gw1 = x.T @ gh / len(y)
    w1 -= 0.01 * gw1; w2 -= 0.01 * gw2
    step += 1
    if step % 20 == 0:
        save_file({"w1": w1, "w2": w2}, os.path.join(out, f"checkpoint-{step}.safetensors"))
print(f"{step} steps")
