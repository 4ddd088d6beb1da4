"""PyTorch (CPU) training: loads a safetensors checkpoint, trains an MLP on
synthetic data for SECONDS, saves checkpoints (torch.save and safetensors).
Usage: torch_train.py DIR SECONDS"""
import os, sys, time
import torch
from safetensors.torch import load_file, save_file

out, seconds = sys.argv[1], float(sys.argv[2])
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.ReLU(), torch.nn.Linear(512, 10))
ckpt = os.path.join(out, "init.safetensors")
if not os.path.exists(ckpt):
    save_file(model.state_dict(), ckpt)
model.load_state_dict(load_file(ckpt))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
x, y = torch.randn(4096, 256), torch.randint(0, 10, (4096,))
end, step = time.time() + seconds, 0
while time.time() < end:
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    step += 1
    if step % 50 == 0:
        torch.save(model.state_dict(), os.path.join(out, f"step-{step}.pt"))
print(f"{step} steps, loss {loss.item():.3f}")
