"""Two-rank distributed training with torch.distributed (gloo), rendezvousing
on 127.0.0.1:29500 as torchrun does by default; rank 0 saves checkpoints.
Usage: torch_ddp.py DIR SECONDS"""
import os, sys, time
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

def rank_main(rank, out, seconds):
    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:29500", rank=rank, world_size=2)
    torch.manual_seed(rank)
    model = torch.nn.parallel.DistributedDataParallel(
        torch.nn.Sequential(torch.nn.Linear(128, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(1024, 128), torch.randint(0, 10, (1024,))
    end, step = time.time() + seconds, 0
    while True:
        # Both ranks stop on the same step.
        go = torch.tensor([1 if time.time() < end else 0])
        dist.all_reduce(go, op=dist.ReduceOp.MIN)
        if go.item() == 0:
            break
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        step += 1
        if rank == 0 and step % 50 == 0:
            torch.save(model.module.state_dict(), os.path.join(out, f"ddp-step-{step}.pt"))
    dist.destroy_process_group()

if __name__ == "__main__":
    mp.spawn(rank_main, args=(sys.argv[1], float(sys.argv[2])), nprocs=2)
