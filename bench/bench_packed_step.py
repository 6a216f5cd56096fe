"""Where one packed synthetic group's GPU time goes, Ray-free: `sweeps/synthetic-paper.yaml`'s model at
D = 2M rows (12 members, batch 10,000), ms per training step, seconds per validation pass over the
2M validation rows, then a CUDA kernel table of 10 steps and one validation pass.

    bash .devcarry/ray-unpack.sh || exit; export PYTHONPATH=/tmp/site:$PWD; python3 bench/bench_packed_step.py
"""
import time

import torch
import yaml

from ctxscale.spec import parse_spec
from ctxscale.sweep.grid import expand_grid
from ctxscale.sweep.prepare import prepare_data
from ctxscale.train import synthetic as loop
raw = yaml.safe_load(open("sweeps/synthetic-paper.yaml"))
t = time.perf_counter()
spec = parse_spec(raw)
data = prepare_data(spec)
print(f"data {time.perf_counter() - t:.1f} s", flush=True)
r = dict(raw)
r["grid"] = dict(raw["grid"], data_size=[2_000_000], seed=[0])
run = loop.setup_synthetic(expand_grid(parse_spec(r)), data)
perm = torch.randperm(2_000_000).cuda()
def steps(n):
    for step in range(n):
        rows = perm[step * 10_000:(step + 1) * 10_000]
        bits, control, labels = run.train.batch(rows)
        losses = loop.member_bce_losses(run.net(bits, control), labels)
        run.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        loop.clip_grad_norm_per_member(run.model.parameters(), 1.0)
        run.optimizer.step()
steps(5); torch.cuda.synchronize()
t = time.perf_counter(); steps(50); torch.cuda.synchronize(); dt = (time.perf_counter() - t) / 50
print(f"train step {dt*1e3:.2f} ms (200 per epoch: {dt*200:.2f} s)", flush=True)
loop._evaluate(run.model, run.val, 0, 1, run.device); torch.cuda.synchronize()
t = time.perf_counter(); loop._evaluate(run.model, run.val, 0, 1, run.device); torch.cuda.synchronize()
print(f"eval {time.perf_counter()-t:.3f} s", flush=True)
from torch.profiler import profile, ProfilerActivity
with profile(activities=[ProfilerActivity.CUDA]) as p:
    steps(10); loop._evaluate(run.model, run.val, 0, 1, run.device); torch.cuda.synchronize()
print(p.key_averages().table(sort_by="cuda_time_total", row_limit=22), flush=True)
