"""GPU checks through a real kilnd on a machine with an NVIDIA GPU (run by gpu_check.sh):
the agent finds the GPU, CUDA_VISIBLE_DEVICES isolates jobs, GPUs are exclusive, a static
job all-reduces over NCCL, an elastic kiln.elastic job trains on CUDA, and the
Fashion-MNIST example trains on CUDA and registers a model that a CPU replica serves.
CI has no GPU: this is run by hand (results in the issue notes)."""
import json, os, sys, time
sys.path.insert(0, os.path.join(os.getcwd(), "python"))
import kiln

url = open("/tmp/k/kilnd.url").read().strip()
c = kiln.Client(url, user="admin", password="password1")
results = {}
FMNIST_DIR = os.path.abspath(os.environ.get("FMNIST_DIR", "/usr/share/datasets/fashion-mnist"))

def wait(jid, timeout=180):
    t = time.time()
    while time.time() - t < timeout:
        j = c.job(jid)
        if j["state"] in ("FINISHED", "FAILED", "KILLED"):
            return j
        time.sleep(0.5)
    return c.job(jid)

def logs(jid):
    return [l["text"] for l in c.logs(jid)]

agents = c._request("GET", "/api/v1/agents")["agents"]
results["agent_gpus"] = agents[0]["gpus"]
probe = ("import os, torch; print('CVD=' + repr(os.environ.get('CUDA_VISIBLE_DEVICES')), "
         "'count=%d' % torch.cuda.device_count(), torch.cuda.get_device_name(0) if torch.cuda.device_count() else '')")
a = c.submit(["python3", "-c", probe], gpus=1, name="gpu1")
b = c.submit(["python3", "-c", probe], gpus=0, name="gpu0")
results["gpu1"] = (wait(a["id"])["state"], logs(a["id"]))
results["gpu0"] = (wait(b["id"])["state"], logs(b["id"]))
# Exclusive GPUs: a second 1-GPU job waits while the first holds the only GPU.
h = c.submit(["python3", "-c", "import time; time.sleep(6)"], gpus=1, name="holder")
time.sleep(1.5)
w = c.submit(["python3", "-c", probe], gpus=1, name="waiter")
time.sleep(1.5)
results["waiter_state_while_held"] = c.job(w["id"])["state"]
results["waiter"] = (wait(w["id"])["state"], logs(w["id"]))
# Static distributed job: NCCL all-reduce on CUDA through Kiln's env:// variables.
nccl = ("import os, torch, torch.distributed as d; d.init_process_group('nccl'); "
        "x = torch.ones(4, device='cuda') * (d.get_rank() + 1); d.all_reduce(x); "
        "print('nccl', d.get_rank(), d.get_world_size(), x.tolist(), os.environ['MASTER_ADDR'], os.environ['MASTER_PORT'])")
s = c.submit(["python3", "-c", nccl], gpus=1, workers=1, name="static-nccl")
sj = wait(s["id"])
results["static_nccl"] = (sj["state"], sj["reason"], logs(s["id"])[-5:])
# Elastic job on CUDA: kiln.elastic picks NCCL; one GPU, so max 2 runs 1 worker.
e = c.submit(["python3", "train_elastic.py", "--data-dir", FMNIST_DIR,
              "--epochs", "2", "--batch-size", "64", "--max-workers", "2"],
             package="examples/fashion_mnist/elastic", gpus=1, min_workers=1, max_workers=2,
             name="elastic-cuda")
ej = wait(e["id"], 240)
results["elastic"] = {"state": ej["state"], "reason": ej["reason"], "tasks": len(ej["tasks"]),
                      "generations": ej["generations"], "log": logs(e["id"])[-12:]}
# Train on CUDA, register, serve on a CPU: the example trains on the GPU its job holds,
# kiln.save_model saves a CPU copy, so the registered file has no CUDA tensors in it.
out = os.environ.get("OUT")
t = c.submit(["python3", "train.py", "--data-dir", FMNIST_DIR, "--epochs", "1", "--model", "cnn"],
             package="examples/fashion_mnist", gpus=1, name="fmnist-cuda")
tj = wait(t["id"], 240)
tlog = logs(t["id"])
results["train_cuda"] = {"state": tj["state"], "reason": tj["reason"],
                         "device": [l for l in tlog if l.startswith("device ")],
                         "log": tlog[-4:]}
if tj["state"] == "FINISHED":
    import io
    import torch
    sys.path.insert(0, "examples/fashion_mnist")
    from train import load_split
    version = c.register_model("fmnist-cuda", job_id=t["id"])
    content = c.model_content("fmnist-cuda", version["version"])
    loaded = torch.jit.load(io.BytesIO(content))  # no map_location: the file's own devices
    images = load_split(FMNIST_DIR, "t10k", 8)[0]
    with torch.no_grad():
        expected = loaded(images)
    results["registered"] = {
        "version": version["version"], "bytes": len(content),
        "devices": sorted({str(p.device) for p in loaded.parameters()}),
        "accuracy": (version.get("metrics") or {}).get("accuracy")}
    if out:  # for kiln-serve on a CPU-only machine: the file, and what it must answer
        open(os.path.join(out, "fmnist_cuda.pt"), "wb").write(content)
        json.dump({"signature": version["signature"], "images": images.tolist(),
                   "expected": expected.tolist()},
                  open(os.path.join(out, "fmnist_cuda.json"), "w"))
print(json.dumps(results, indent=1))
if out:
    open(os.path.join(out, "gpu_check.json"), "w").write(json.dumps(results, indent=1))
# What must hold (exit 1 otherwise).
assert results["agent_gpus"], "the agent found no GPU"
assert results["gpu1"][0] == "FINISHED" and "count=1" in results["gpu1"][1][0], results["gpu1"]
assert results["gpu0"][0] == "FINISHED" and "count=0" in results["gpu0"][1][0], results["gpu0"]
assert results["waiter_state_while_held"] == "QUEUED", "a second job took a GPU already held"
assert results["static_nccl"][0] == "FINISHED", results["static_nccl"]
assert results["elastic"]["state"] == "FINISHED", results["elastic"]
assert results["train_cuda"]["state"] == "FINISHED", results["train_cuda"]
assert results["train_cuda"]["device"][0].startswith("device cuda"), results["train_cuda"]
assert results["registered"]["devices"] == ["cpu"], results["registered"]
print("GPU check passed")
